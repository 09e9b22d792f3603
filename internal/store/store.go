// Package store is settle's Postgres access: merchants and API keys,
// sessions, payment methods and receivers. Every change a merchant can
// observe writes its event (RecordEvent, events.go) in the same transaction.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers act on.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict means the row exists in a state that refuses the change.
	ErrConflict = errors.New("conflict")
)

// Store wraps a Postgres pool.
type Store struct {
	pool *pgxpool.Pool
	// chains are the chains whose reconcilers a deadline waits for.
	chains []int64
}

// New returns a Store over pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool, chains: []int64{}} }

// ExpectChains sets the chains a payer can pay a receiver on (the indexed
// ones): a session with a receiver is known to have expired only once
// each of their reconcilers has attributed final blocks stamped at or
// after its deadline. Without any, the deadline alone decides.
func (s *Store) ExpectChains(ids ...uint64) *Store {
	s.chains = make([]int64, len(ids))
	for i, id := range ids {
		s.chains[i] = int64(id)
	}
	return s
}

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Merchant is an account that creates sessions.
type Merchant struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// randomToken returns n random bytes, base64url-encoded without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics
		// internally instead); keep the guard for clarity.
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// CreateMerchant stores a new merchant.
func (s *Store) CreateMerchant(ctx context.Context, name string) (Merchant, error) {
	m := Merchant{ID: "mer_" + randomToken(12), Name: name}
	const q = `INSERT INTO merchants (id, name) VALUES ($1, $2) RETURNING created_at`
	if err := s.pool.QueryRow(ctx, q, m.ID, m.Name).Scan(&m.CreatedAt); err != nil {
		return Merchant{}, fmt.Errorf("inserting merchant: %w", err)
	}
	return m, nil
}

// APIKeyPrefix starts every API key, so secret scanners and people can tell
// what a leaked string is.
const APIKeyPrefix = "settle_sk_"

// HashAPIKey is the digest under which a key is stored and looked up. A key
// carries 256 random bits, so a fast unsalted hash is enough: there is
// nothing to brute-force.
func HashAPIKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// CreateAPIKey makes a new key for a merchant and returns its plaintext,
// which exists only in this return value: only its hash is stored.
func (s *Store) CreateAPIKey(ctx context.Context, merchantID string) (key, keyID string, err error) {
	key = APIKeyPrefix + randomToken(32)
	keyID = "key_" + randomToken(9)
	const q = `INSERT INTO api_keys (id, merchant_id, key_hash, prefix) VALUES ($1, $2, $3, $4)`
	if _, err := s.pool.Exec(ctx, q, keyID, merchantID, HashAPIKey(key), key[:len(APIKeyPrefix)+4]); err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "23503" {
			return "", "", fmt.Errorf("merchant %s: %w", merchantID, ErrNotFound)
		}
		return "", "", fmt.Errorf("inserting api key: %w", err)
	}
	return key, keyID, nil
}

// MerchantByAPIKey returns the merchant owning an unrevoked key. Unknown and
// revoked keys give the same ErrNotFound.
func (s *Store) MerchantByAPIKey(ctx context.Context, key string) (string, error) {
	var merchantID string
	const q = `SELECT merchant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`
	err := s.db(ctx).QueryRow(ctx, q, HashAPIKey(key)).Scan(&merchantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up api key: %w", err)
	}
	return merchantID, nil
}

// RevokeAPIKey revokes a key by id.
func (s *Store) RevokeAPIKey(ctx context.Context, keyID string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, keyID)
	if err != nil {
		return fmt.Errorf("revoking api key %s: %w", keyID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
