package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// IdempotencyTTL is how long a stored response is replayed.
const IdempotencyTTL = 24 * time.Hour

// ErrIdempotencyMismatch means the key was used before with another
// request.
var ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")

// StoredResponse is a response kept for an Idempotency-Key.
type StoredResponse struct {
	Status      int
	ContentType string
	Body        []byte
}

// IdempotencyClaim is the right to run a request for a key: its
// transaction holds the key's row, uncommitted, so a concurrent request
// with the same key waits on it. The request's own writes go through
// Context, into the same transaction, so its effect and its stored
// response commit together or not at all.
type IdempotencyClaim struct {
	tx         pgx.Tx
	scope, key string
	hash       []byte
	done       bool
}

// ClaimIdempotencyKey either claims (scope, key) for a new request, or,
// when a request with this key already completed within IdempotencyTTL,
// returns its stored response to replay. A key whose stored request hash
// differs gives ErrIdempotencyMismatch. A request still running under the
// key makes this call wait until it completes or aborts.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, scope, key string, requestHash []byte) (*IdempotencyClaim, *StoredResponse, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("claiming idempotency key: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	// The placeholder row (status 0) is what others wait on. An expired
	// row is taken over as if new. ON CONFLICT waits for an uncommitted
	// insert of the same key to commit or roll back before it decides.
	const claim = `INSERT INTO idempotency_keys (scope, key, request_hash, status, content_type, body)
		VALUES ($1, $2, $3, 0, '', '')
		ON CONFLICT (scope, key) DO UPDATE
			SET request_hash = EXCLUDED.request_hash, status = 0, content_type = '', body = '', created_at = now()
			WHERE idempotency_keys.created_at < now() - $4 * interval '1 second'
		RETURNING true`
	var claimed bool
	err = tx.QueryRow(ctx, claim, scope, key, requestHash, int64(IdempotencyTTL.Seconds())).Scan(&claimed)
	switch {
	case err == nil:
		ok = true
		return &IdempotencyClaim{tx: tx, scope: scope, key: key, hash: requestHash}, nil, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, nil, fmt.Errorf("claiming idempotency key: %w", err)
	}
	var (
		stored []byte
		resp   StoredResponse
	)
	const read = `SELECT request_hash, status, content_type, body FROM idempotency_keys WHERE scope = $1 AND key = $2`
	if err := tx.QueryRow(ctx, read, scope, key).Scan(&stored, &resp.Status, &resp.ContentType, &resp.Body); err != nil {
		return nil, nil, fmt.Errorf("reading idempotency key: %w", err)
	}
	if !bytes.Equal(stored, requestHash) {
		return nil, nil, ErrIdempotencyMismatch
	}
	return nil, &resp, nil
}

// Context returns ctx carrying the claim's transaction: Store methods
// called with it write inside the claim.
func (c *IdempotencyClaim) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, txKey{}, c.tx)
}

// Complete stores the response and commits it together with the request's
// effect.
func (c *IdempotencyClaim) Complete(ctx context.Context, r StoredResponse) error {
	if c.done {
		return errors.New("idempotency claim already finished")
	}
	c.done = true
	const q = `UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 WHERE scope = $1 AND key = $2`
	if _, err := c.tx.Exec(ctx, q, c.scope, c.key, r.Status, r.ContentType, r.Body); err != nil {
		_ = c.tx.Rollback(context.WithoutCancel(ctx))
		return fmt.Errorf("storing idempotent response: %w", err)
	}
	if err := c.tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing idempotent request: %w", err)
	}
	return nil
}

// Abort rolls back the request's effect and frees the key for a retry.
func (c *IdempotencyClaim) Abort(ctx context.Context) {
	if c.done {
		return
	}
	c.done = true
	_ = c.tx.Rollback(context.WithoutCancel(ctx))
}

// PruneIdempotencyKeys deletes responses older than IdempotencyTTL and
// returns how many.
func (s *Store) PruneIdempotencyKeys(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - $1 * interval '1 second'`, int64(IdempotencyTTL.Seconds()))
	if err != nil {
		return 0, fmt.Errorf("pruning idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
