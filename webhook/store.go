package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/store"
)

// Errors callers act on.
var (
	ErrNotFound = errors.New("not found")
	// ErrBadCursor is a starting_after that names no object of the list.
	ErrBadCursor = errors.New("unknown cursor")
)

// InputError is merchant input the store refuses, naming the field.
type InputError struct {
	Param   string
	Message string
}

func (e *InputError) Error() string { return e.Param + ": " + e.Message }

// EventTypes are the event types an endpoint can subscribe to: every type
// of the event log.
var EventTypes = store.EventTypes

// TestEventType is the type of the events POST /v1/webhooks/{id}/test sends.
const TestEventType = store.EventWebhookTest

// Limits on merchant input: every endpoint multiplies each event's fan-out.
const (
	MaxEndpointsPerMerchant = 16
	maxDescription          = 500
	// RotationOverlap is how long the previous secret keeps signing after a
	// rotation, so receivers can switch without dropping messages.
	RotationOverlap = 24 * time.Hour
)

// Endpoint is a merchant's webhook endpoint.
type Endpoint struct {
	ID             string
	MerchantID     string
	URL            string
	Description    string
	Events         []string // empty: every type
	Enabled        bool
	DisabledReason string
	CreatedAt      time.Time
	// Secret is filled only where it is shown: on create and rotate (once,
	// to the merchant), and to the operator and settle dev.
	Secret string
}

// Attempt is one POST of a delivery.
type Attempt struct {
	ID         int64
	EventID    string
	EventType  string
	At         time.Time
	StatusCode int // 0: no response
	LatencyMS  int
	Error      string
}

// Store keeps endpoints and answers the API's webhook calls.
type Store struct {
	pool   *pgxpool.Pool
	policy Policy
	now    func() time.Time
}

// NewStore returns a Store; policy checks URLs at registration.
func NewStore(pool *pgxpool.Pool, policy Policy) *Store {
	return &Store{pool: pool, policy: policy, now: time.Now}
}

func randomID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// checkEvents validates an event filter, returning it sorted and without
// repeats.
func checkEvents(events []string) ([]string, error) {
	if len(events) > len(EventTypes) {
		return nil, &InputError{"events", "too many event types"}
	}
	out := []string{}
	for _, e := range events {
		if !slices.Contains(EventTypes, e) {
			if len(e) > 64 {
				e = e[:64]
			}
			return nil, &InputError{"events", fmt.Sprintf("unknown event type %q", e)}
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	slices.Sort(out)
	return out, nil
}

const endpointCols = `id, merchant_id, url, description, events, enabled, coalesce(disabled_reason, ''), created_at`

// endpointDest is where a row of endpointCols scans to.
func endpointDest(e *Endpoint) []any {
	return []any{&e.ID, &e.MerchantID, &e.URL, &e.Description, &e.Events, &e.Enabled, &e.DisabledReason, &e.CreatedAt}
}

func scanEndpoint(row pgx.Row, e *Endpoint) error { return row.Scan(endpointDest(e)...) }

// queryEndpoints runs a query of endpointCols (then secret, withSecret).
func (s *Store) queryEndpoints(ctx context.Context, withSecret bool, q string, args ...any) ([]Endpoint, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Endpoint, error) {
		var e Endpoint
		dst := endpointDest(&e)
		if withSecret {
			dst = append(dst, &e.Secret)
		}
		return e, row.Scan(dst...)
	})
}

// CreateEndpoint registers an endpoint with a fresh secret (returned in
// Secret, the only time the merchant sees it).
func (s *Store) CreateEndpoint(ctx context.Context, merchantID, rawURL string, events []string, description string) (*Endpoint, error) {
	if _, err := s.policy.CheckURL(rawURL); err != nil {
		return nil, &InputError{"url", err.Error()}
	}
	events, err := checkEvents(events)
	if err != nil {
		return nil, err
	}
	if len(description) > maxDescription {
		return nil, &InputError{"description", fmt.Sprintf("at most %d characters", maxDescription)}
	}
	e := &Endpoint{}
	secret := NewSecret()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating endpoint: %w", err)
	}
	defer tx.Rollback(ctx)
	// The merchant row lock serializes creates, so the limit holds under
	// concurrent requests. NO KEY UPDATE: it does not wait for (or block)
	// the key-share locks that inserting the merchant's sessions takes.
	var n int
	const lock = `SELECT (SELECT count(*) FROM webhook_endpoints WHERE merchant_id = m.id) FROM merchants m WHERE m.id = $1 FOR NO KEY UPDATE`
	if err := tx.QueryRow(ctx, lock, merchantID).Scan(&n); errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("merchant %s: %w", merchantID, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("counting endpoints: %w", err)
	}
	if n >= MaxEndpointsPerMerchant {
		return nil, &InputError{"url", fmt.Sprintf("a merchant can have at most %d webhook endpoints", MaxEndpointsPerMerchant)}
	}
	const q = `INSERT INTO webhook_endpoints (id, merchant_id, url, description, events, secret, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ` + endpointCols
	if err := scanEndpoint(tx.QueryRow(ctx, q, randomID("we_"), merchantID, rawURL, description, events, secret, s.now()), e); err != nil {
		return nil, fmt.Errorf("inserting endpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("committing endpoint: %w", err)
	}
	e.Secret = secret
	return e, nil
}

// GetEndpoint returns a merchant's endpoint, without its secret.
func (s *Store) GetEndpoint(ctx context.Context, merchantID, id string) (*Endpoint, error) {
	e := &Endpoint{}
	err := scanEndpoint(s.pool.QueryRow(ctx, `SELECT `+endpointCols+` FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2`, id, merchantID), e)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading endpoint: %w", err)
	}
	return e, nil
}

// ListEndpoints returns up to n endpoints of a merchant, newest first,
// after the endpoint startingAfter (if not empty; ErrBadCursor if it is
// not one of the merchant's).
func (s *Store) ListEndpoints(ctx context.Context, merchantID string, n int, startingAfter string) ([]Endpoint, error) {
	args := []any{merchantID, n}
	cond := ""
	if startingAfter != "" {
		var ok bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2)`, startingAfter, merchantID).Scan(&ok); err != nil {
			return nil, fmt.Errorf("reading cursor: %w", err)
		}
		if !ok {
			return nil, ErrBadCursor
		}
		cond = ` AND (created_at, id) < (SELECT created_at, id FROM webhook_endpoints WHERE id = $3)`
		args = append(args, startingAfter)
	}
	out, err := s.queryEndpoints(ctx, false, `SELECT `+endpointCols+` FROM webhook_endpoints WHERE merchant_id = $1`+cond+
		` ORDER BY created_at DESC, id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing endpoints: %w", err)
	}
	return out, nil
}

// DeleteEndpoint deletes an endpoint with its deliveries and attempts. An
// empty merchantID deletes whoever's it is (the operator's `settle webhook
// rm`); the API always passes the caller.
func (s *Store) DeleteEndpoint(ctx context.Context, merchantID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR merchant_id = $2)`, id, merchantID)
	if err != nil {
		return fmt.Errorf("deleting endpoint %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// RotateSecret gives an endpoint a new secret (returned in Secret); the old
// one keeps signing for RotationOverlap. Rotating again within the window
// drops the oldest.
func (s *Store) RotateSecret(ctx context.Context, merchantID, id string) (*Endpoint, error) {
	e := &Endpoint{}
	secret := NewSecret()
	const q = `UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = $3, secret = $4
		WHERE id = $1 AND merchant_id = $2 RETURNING ` + endpointCols
	err := scanEndpoint(s.pool.QueryRow(ctx, q, id, merchantID, s.now().Add(RotationOverlap), secret), e)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("rotating secret: %w", err)
	}
	e.Secret = secret
	return e, nil
}

// EnableEndpoint turns a disabled endpoint back on: it gets the events
// written from now on (replay brings back what it missed).
func (s *Store) EnableEndpoint(ctx context.Context, merchantID, id string) (*Endpoint, error) {
	e := &Endpoint{}
	const q = `UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL
		WHERE id = $1 AND merchant_id = $2 RETURNING ` + endpointCols
	err := scanEndpoint(s.pool.QueryRow(ctx, q, id, merchantID), e)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("enabling endpoint: %w", err)
	}
	return e, nil
}

// EndpointsForOperator lists every endpoint of a merchant with its secret.
func (s *Store) EndpointsForOperator(ctx context.Context, merchantID string) ([]Endpoint, error) {
	out, err := s.queryEndpoints(ctx, true, `SELECT `+endpointCols+`, secret FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY created_at, id`, merchantID)
	if err != nil {
		return nil, fmt.Errorf("listing endpoints: %w", err)
	}
	return out, nil
}

// testObject is data.object of a test event: the endpoint as the API shows
// it, so the receiver sees which endpoint the test was for.
type testObject struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// SendTest queues a test event (isTestEvent true, type webhook.test) for
// one endpoint only. It is an outbox row like any other event (already
// fanned out, to this endpoint), so it is listed, signed, retried and
// replayable the same way. Its subject is the endpoint, with a sequence of
// its own.
func (s *Store) SendTest(ctx context.Context, merchantID, id string) (string, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("sending test event: %w", err)
	}
	defer tx.Rollback(ctx)
	var url string
	var enabled bool
	// The endpoint row lock orders concurrent tests' sequences (NO KEY
	// UPDATE leaves the fan-out's key-share locks alone).
	err = tx.QueryRow(ctx, `SELECT url, enabled FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 FOR NO KEY UPDATE`, id, merchantID).Scan(&url, &enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("reading endpoint: %w", err)
	}
	if !enabled {
		return "", &InputError{"id", "the endpoint is disabled"}
	}
	ev, err := store.RecordTestEvent(ctx, tx, store.TestEvent{MerchantID: merchantID, EndpointID: id, Object: testObject{ID: id, URL: url}, At: s.now()})
	if err != nil {
		return "", err
	}
	const del = `INSERT INTO webhook_deliveries (outbox_id, event_id, endpoint_id, subject_id, sequence, next_attempt_at, created_at)
		VALUES ($1, $2, $3, $3, $4, $5, $5)`
	if _, err := tx.Exec(ctx, del, ev.Row, ev.ID, id, ev.Sequence, ev.CreatedAt); err != nil {
		return "", fmt.Errorf("queueing test delivery: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("committing test event: %w", err)
	}
	return ev.ID, nil
}

// Replay sends an event again: to endpointID, or (empty) to every enabled
// endpoint of the merchant whose filter takes it (a test event: its own
// endpoint). A delivery that exists
// starts over (pending, due now, a new retry window); the earlier
// attempts stay listed. It returns how many deliveries were queued.
func (s *Store) Replay(ctx context.Context, merchantID, eventID, endpointID string) (int, error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE event_id = $1 AND merchant_id = $2)`, eventID, merchantID).Scan(&exists); err != nil {
		return 0, fmt.Errorf("reading event: %w", err)
	}
	if !exists {
		return 0, ErrNotFound
	}
	if endpointID != "" {
		e, err := s.GetEndpoint(ctx, merchantID, endpointID)
		if errors.Is(err, ErrNotFound) {
			return 0, &InputError{"endpoint", "no such webhook endpoint"}
		}
		if err != nil {
			return 0, err
		}
		if !e.Enabled {
			return 0, &InputError{"endpoint", "the endpoint is disabled"}
		}
	}
	const q = `INSERT INTO webhook_deliveries (outbox_id, event_id, endpoint_id, subject_id, sequence, next_attempt_at, created_at)
		SELECT o.id, o.event_id, e.id, o.subject_id, o.sequence, $4, $4
		FROM outbox o JOIN webhook_endpoints e ON e.merchant_id = o.merchant_id AND e.enabled
		WHERE o.event_id = $1 AND o.merchant_id = $2
		  AND (e.id = $3 OR $3 = '' AND (cardinality(e.events) = 0 OR o.topic = ANY (e.events))
			-- A test event is only ever its own endpoint's.
			AND (NOT o.is_test OR e.id = o.subject_id))
		ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', attempts = 0,
			next_attempt_at = EXCLUDED.next_attempt_at, created_at = EXCLUDED.created_at,
			claimed_until = NULL, claim_token = NULL, finished_at = NULL, last_error = NULL`
	tag, err := s.pool.Exec(ctx, q, eventID, merchantID, endpointID, s.now())
	if err != nil {
		return 0, fmt.Errorf("replaying event %s: %w", eventID, err)
	}
	return int(tag.RowsAffected()), nil
}

// ListAttempts returns up to n attempts to a merchant's endpoint, newest
// first, after the attempt startingAfter (its numeric id; ErrBadCursor if
// it is not one of this endpoint's).
func (s *Store) ListAttempts(ctx context.Context, merchantID, endpointID string, n int, startingAfter int64) ([]Attempt, error) {
	if _, err := s.GetEndpoint(ctx, merchantID, endpointID); err != nil {
		return nil, err
	}
	args := []any{endpointID, n}
	cond := ""
	if startingAfter != 0 {
		var ok bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_attempts WHERE id = $1 AND endpoint_id = $2)`, startingAfter, endpointID).Scan(&ok); err != nil {
			return nil, fmt.Errorf("reading cursor: %w", err)
		}
		if !ok {
			return nil, ErrBadCursor
		}
		cond = ` AND (a.at, a.id) < (SELECT at, id FROM webhook_attempts WHERE id = $3)`
		args = append(args, startingAfter)
	}
	rows, err := s.pool.Query(ctx, `SELECT a.id, d.event_id, o.topic, a.at, coalesce(a.status_code, 0), a.latency_ms, coalesce(a.error, '')
		FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id JOIN outbox o ON o.id = d.outbox_id
		WHERE a.endpoint_id = $1`+cond+` ORDER BY a.at DESC, a.id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		if err := rows.Scan(&a.ID, &a.EventID, &a.EventType, &a.At, &a.StatusCode, &a.LatencyMS, &a.Error); err != nil {
			return nil, fmt.Errorf("listing attempts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	return out, nil
}

// DevEndpoint returns the merchant's endpoint at url with its secret,
// creating it (every event type) when there is none and enabling it again
// if it was disabled: settle dev's own receiver, kept across restarts.
func (s *Store) DevEndpoint(ctx context.Context, merchantID, url string) (*Endpoint, error) {
	e := &Endpoint{}
	const q = `UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL
		WHERE id = (SELECT id FROM webhook_endpoints WHERE merchant_id = $1 AND url = $2 ORDER BY created_at LIMIT 1)
		RETURNING ` + endpointCols + `, secret`
	err := s.pool.QueryRow(ctx, q, merchantID, url).Scan(append(endpointDest(e), &e.Secret)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.CreateEndpoint(ctx, merchantID, url, nil, "settle dev's receiver (prints events)")
	}
	if err != nil {
		return nil, fmt.Errorf("reading dev endpoint: %w", err)
	}
	return e, nil
}
