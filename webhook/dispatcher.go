// Package webhook delivers settle's events to merchants' endpoints: the
// endpoints and their signing secrets (Standard Webhooks), the SSRF guard
// every POST goes through, and the Dispatcher, which turns outbox rows into
// deliveries and sends them with retries, in order per object.
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Dispatcher.
type Config struct {
	Postgres *pgxpool.Pool
	// Policy is the SSRF guard's; only dev and tests allow loopback.
	Policy Policy
	// RootCAs replaces the system roots for endpoints' TLS (tests).
	RootCAs *x509.CertPool
	// Timeout bounds one POST, connect to last byte; default 10 s.
	Timeout time.Duration
	// Lease is how long a claimed delivery is ours before another
	// dispatcher may take it; it must exceed Timeout (default Timeout +
	// 20 s), so a live dispatcher's claim is never taken from it.
	Lease time.Duration
	// Workers bounds concurrent POSTs; default 32.
	Workers int
	// PerEndpoint is about the most POSTs one endpoint gets at once from
	// this dispatcher (default Workers/4): a slow endpoint with a backlog
	// must not take every worker from the other merchants.
	PerEndpoint int
	// PollInterval is how often an idle dispatcher looks for work;
	// default 25 ms. It bounds the latency of a quiet system. An idle
	// look is two index probes that write nothing. Writers do not NOTIFY
	// instead: a transaction that notifies takes a database-wide lock
	// through its commit, which would serialize every session change's
	// commit behind the others.
	PollInterval time.Duration
	// Backoff is the retry schedule; zero fields take DefaultBackoff's.
	Backoff Backoff
	// MaxResponseBytes caps how much of an answer is read; default 64 KiB.
	MaxResponseBytes int64
	// Now is the clock for schedules, leases and records; tests inject a
	// fake one. The webhook-timestamp header always carries the wall
	// clock, since receivers check it against theirs.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Dispatcher fans outbox events out to deliveries and sends them. Any
// number may run against one database: fan-out takes an advisory lock,
// claims skip rows another dispatcher holds.
type Dispatcher struct {
	cfg     Config
	pool    *pgxpool.Pool
	client  *http.Client
	logger  *slog.Logger
	metrics *metrics
	rand    func() float64

	mu       sync.Mutex
	inFlight map[string]int // endpoint id → POSTs under way
}

// NewDispatcher checks cfg and builds a Dispatcher.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	if cfg.Postgres == nil {
		return nil, errors.New("webhook: Postgres is required")
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	cfg.Lease = cmp.Or(cfg.Lease, cfg.Timeout+20*time.Second)
	if cfg.Lease <= cfg.Timeout {
		return nil, fmt.Errorf("webhook: Lease %s must exceed Timeout %s", cfg.Lease, cfg.Timeout)
	}
	cfg.Workers = cmp.Or(cfg.Workers, 32)
	cfg.PerEndpoint = cmp.Or(cfg.PerEndpoint, max(cfg.Workers/4, 1))
	cfg.PollInterval = cmp.Or(cfg.PollInterval, 25*time.Millisecond)
	cfg.Backoff.Min = cmp.Or(cfg.Backoff.Min, DefaultBackoff.Min)
	cfg.Backoff.Base = cmp.Or(cfg.Backoff.Base, DefaultBackoff.Base)
	cfg.Backoff.Cap = cmp.Or(cfg.Backoff.Cap, DefaultBackoff.Cap)
	cfg.Backoff.RetryWindow = cmp.Or(cfg.Backoff.RetryWindow, DefaultBackoff.RetryWindow)
	cfg.MaxResponseBytes = cmp.Or(cfg.MaxResponseBytes, 64<<10)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	logger := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	return &Dispatcher{
		cfg:      cfg,
		pool:     cfg.Postgres,
		client:   cfg.Policy.Client(cfg.Timeout, cfg.RootCAs),
		logger:   logger.With("component", "webhook"),
		metrics:  newMetrics(cfg.Registerer),
		rand:     randFloat,
		inFlight: map[string]int{},
	}, nil
}

// Run fans out and delivers until ctx is done. Attempts in flight then
// finish (bounded by Timeout) and are recorded before Run returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.logger.InfoContext(ctx, "webhook dispatcher started", "workers", d.cfg.Workers)
	sem := make(chan struct{}, d.cfg.Workers)
	done := make(chan struct{}, d.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	var lastGauges, lastFanOut time.Time
	fanned := 0
	for ctx.Err() == nil {
		if time.Since(lastGauges) > 5*time.Second {
			lastGauges = time.Now()
			if err := d.updateGauges(ctx); err != nil && ctx.Err() == nil {
				d.logger.WarnContext(ctx, "reading webhook queue depth failed", "err", err)
			}
		}
		// A busy loop comes round for every finished attempt; fanning out
		// each time would cost more than the deliveries. Once per
		// fanOutEvery is enough, unless the last one left a full batch.
		if fanned == fanOutBatch || time.Since(lastFanOut) >= fanOutEvery {
			lastFanOut = time.Now()
			var err error
			if fanned, err = d.fanOut(ctx); err != nil && ctx.Err() == nil {
				d.logger.WarnContext(ctx, "fanning out events failed; will retry", "err", err)
			}
		}
		// At most PerEndpoint per claim, and none for an endpoint that has
		// PerEndpoint under way: one endpoint never holds more than about
		// twice that.
		free := min(cap(sem)-len(sem), d.cfg.PerEndpoint)
		var jobs []job
		if free > 0 {
			var err error
			if jobs, err = d.claim(ctx, free); err != nil && ctx.Err() == nil {
				d.logger.WarnContext(ctx, "claiming deliveries failed; will retry", "err", err)
			}
		}
		for _, j := range jobs {
			sem <- struct{}{}
			d.track(j.endpointID, 1)
			wg.Go(func() {
				defer func() {
					d.track(j.endpointID, -1)
					<-sem
					// A wake-up, not a count: never block on it (a
					// busy loop may not drain it before shutdown).
					select {
					case done <- struct{}{}:
					default:
					}
				}()
				d.attempt(ctx, j)
			})
		}
		if free > 0 && len(jobs) == free {
			continue // there may be more due right now
		}
		select {
		case <-ctx.Done():
		case <-done:
		case <-time.After(d.cfg.PollInterval):
		}
		// Drain finished signals so a burst does not wake us many times.
		for len(done) > 0 {
			<-done
		}
	}
	return nil
}

// track counts an endpoint's POSTs under way.
func (d *Dispatcher) track(endpointID string, delta int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inFlight[endpointID] += delta; d.inFlight[endpointID] <= 0 {
		delete(d.inFlight, endpointID)
	}
}

// saturated lists the endpoints at their PerEndpoint limit.
func (d *Dispatcher) saturated() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []string{}
	for id, n := range d.inFlight {
		if n >= d.cfg.PerEndpoint {
			out = append(out, id)
		}
	}
	return out
}

// runOnce fans out, claims up to n due deliveries, attempts them all and
// waits: one deterministic step for tests.
func (d *Dispatcher) runOnce(ctx context.Context, n int) (int, error) {
	if _, err := d.fanOut(ctx); err != nil {
		return 0, err
	}
	jobs, err := d.claim(ctx, n)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { d.attempt(ctx, j) })
	}
	wg.Wait()
	return len(jobs), nil
}

// fanOutLock is the advisory lock key of the fan-out ("whfanout").
const fanOutLock = 0x776866616e6f7574

// fanOutBatch bounds the events one fan-out transaction takes.
const fanOutBatch = 500

// fanOutEvery is how often a busy dispatcher fans out.
const fanOutEvery = 10 * time.Millisecond

// fanOut creates the deliveries of events not yet fanned out, for the
// merchant's enabled endpoints whose filter takes the type, and marks the
// events delivered_at, in one transaction: a crash leaves both or neither.
//
// One dispatcher fans out at a time (the advisory lock; the others skip
// it), in outbox id order. That keeps the ordering check sound: an event's
// deliveries never exist before those of an earlier event of the same
// subject (whose row committed first, its subject's row lock saw to that).
func (d *Dispatcher) fanOut(ctx context.Context) (int, error) {
	// Most looks of a quiet system find nothing: one probe of the partial
	// index instead of a transaction.
	var pending bool
	if err := d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE delivered_at IS NULL)`).Scan(&pending); err != nil {
		return 0, fmt.Errorf("looking for events to fan out: %w", err)
	}
	if !pending {
		return 0, nil
	}
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("fanning out: %w", err)
	}
	defer tx.Rollback(ctx)
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(fanOutLock)).Scan(&ok); err != nil {
		return 0, fmt.Errorf("taking the fan-out lock: %w", err)
	}
	if !ok {
		return 0, nil
	}
	const q = `WITH batch AS (
			SELECT id, event_id, merchant_id, topic, subject_id, sequence FROM outbox
			WHERE delivered_at IS NULL ORDER BY id LIMIT $2 FOR UPDATE
		), fanned AS (
			INSERT INTO webhook_deliveries (outbox_id, event_id, endpoint_id, subject_id, sequence, next_attempt_at, created_at)
			SELECT b.id, b.event_id, e.id, b.subject_id, b.sequence, $1, $1
			FROM batch b JOIN webhook_endpoints e ON e.merchant_id = b.merchant_id AND e.enabled
				AND (cardinality(e.events) = 0 OR b.topic = ANY (e.events))
			ON CONFLICT (event_id, endpoint_id) DO NOTHING
		)
		UPDATE outbox o SET delivered_at = $1 FROM batch WHERE o.id = batch.id`
	tag, err := tx.Exec(ctx, q, d.cfg.Now(), fanOutBatch)
	if err != nil {
		return 0, fmt.Errorf("fanning out events: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("committing fan-out: %w", err)
	}
	n := int(tag.RowsAffected())
	d.metrics.fannedOut.Add(float64(n))
	return n, nil
}

// job is a claimed delivery with what its POST needs.
type job struct {
	id         int64
	token      int64
	eventID    string
	endpointID string
	url        string
	secrets    []string
	body       []byte
	attempts   int // before this one
	createdAt  time.Time
	eventAt    time.Time
}

// claim leases up to n due deliveries. A delivery is due when its
// next_attempt_at has come, no live lease holds it, its endpoint is
// enabled, and no earlier delivery of the same subject to the same endpoint
// is still pending (per-object order: a later event waits until the earlier
// one succeeded or gave up). The lease commits at once; the POST runs
// outside any transaction. Holding a transaction (and a row lock, and a
// pooled connection) across a 10 s POST would tie the dispatcher's
// concurrency to the pool size and keep long transactions open against
// vacuum; the lease costs one more write and gives the same guarantee: a
// dispatcher that dies leaves the row due again when the lease ends.
func (d *Dispatcher) claim(ctx context.Context, n int) ([]job, error) {
	now := d.cfg.Now()
	token := rand.Int64()
	const q = `WITH due AS (
			SELECT d.id FROM webhook_deliveries d
			JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
			WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.endpoint_id <> ALL ($5)
			  AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
			  AND NOT EXISTS (
				SELECT 1 FROM webhook_deliveries p
				WHERE p.endpoint_id = d.endpoint_id AND p.subject_id = d.subject_id AND p.status = 'pending'
				  AND (p.sequence, p.id) < (d.sequence, d.id))
			ORDER BY d.next_attempt_at, d.id
			LIMIT $2
			FOR UPDATE OF d SKIP LOCKED
		)
		UPDATE webhook_deliveries w SET claimed_until = $3, claim_token = $4
		FROM due, outbox o, webhook_endpoints e
		WHERE w.id = due.id AND o.id = w.outbox_id AND e.id = w.endpoint_id
		RETURNING w.id, w.event_id, w.endpoint_id, e.url, e.secret,
			CASE WHEN e.previous_expires_at > $1 THEN e.previous_secret END,
			o.payload::text, w.attempts, w.created_at, o.created_at`
	rows, err := d.pool.Query(ctx, q, now, n, now.Add(d.cfg.Lease), token, d.saturated())
	if err != nil {
		return nil, fmt.Errorf("claiming deliveries: %w", err)
	}
	defer rows.Close()
	var jobs []job
	for rows.Next() {
		j := job{token: token}
		var secret string
		var previous *string
		var body string
		if err := rows.Scan(&j.id, &j.eventID, &j.endpointID, &j.url, &secret, &previous, &body, &j.attempts, &j.createdAt, &j.eventAt); err != nil {
			return nil, fmt.Errorf("claiming deliveries: %w", err)
		}
		j.secrets = []string{secret}
		if previous != nil {
			j.secrets = append(j.secrets, *previous)
		}
		j.body = []byte(body)
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming deliveries: %w", err)
	}
	return jobs, nil
}

// result is what one POST came to.
type result struct {
	status  int // 0: no response
	latency time.Duration
	err     string // empty on success
}

// post sends one delivery. Only a 2xx is a success; a redirect is not
// followed (it could point anywhere, the guard's target list included)
// and counts as a failure like any other non-2xx.
func (d *Dispatcher) post(ctx context.Context, j job) result {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.url, bytes.NewReader(j.body))
	if err != nil {
		return result{err: "building request: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "settle-webhooks/1")
	if err := SetHeaders(req.Header, j.secrets, j.eventID, time.Now(), j.body); err != nil {
		return result{err: err.Error()}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return result{latency: time.Since(start), err: err.Error()}
	}
	// Read (a bounded part of) the answer so the connection can be reused;
	// what a hostile endpoint sends beyond the cap is never read.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, d.cfg.MaxResponseBytes))
	resp.Body.Close()
	r := result{status: resp.StatusCode, latency: time.Since(start)}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		r.err = "HTTP " + strconv.Itoa(resp.StatusCode) + ": redirects are not followed"
	default:
		r.err = "HTTP " + strconv.Itoa(resp.StatusCode)
	}
	return r
}

// attempt POSTs a claimed delivery and records the outcome. The record
// comes after the POST: a crash between the two leaves the lease to run
// out and the delivery to be sent again (at least once, never lost).
func (d *Dispatcher) attempt(ctx context.Context, j job) {
	// A stop does not cut a POST short: it finishes (within Timeout) and
	// is recorded, so a shutdown does not cause a duplicate.
	ctx = context.WithoutCancel(ctx)
	r := d.post(ctx, j)
	d.metrics.duration.Observe(r.latency.Seconds())
	if err := d.record(ctx, j, r); err != nil {
		// The lease will run out and the delivery go again.
		d.logger.WarnContext(ctx, "recording webhook attempt failed", "delivery", j.id, "endpoint", j.endpointID, "err", err)
	}
}

// maxErrorText bounds a stored error message.
const maxErrorText = 500

// Statements of record. The attempt is inserted only while its delivery
// exists: the endpoint may have been deleted (with its deliveries) during
// the POST, and then there is nothing to record.
const (
	insertAttempt = `INSERT INTO webhook_attempts (delivery_id, endpoint_id, at, status_code, latency_ms, error)
		SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR KEY SHARE)`
	markSucceeded = `UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1, finished_at = $3,
		claimed_until = NULL, claim_token = NULL, last_error = NULL WHERE id = $1 AND claim_token = $2`
	// At most once a second per endpoint: a busy endpoint's row is not
	// rewritten on every delivery.
	markEndpointSuccess = `UPDATE webhook_endpoints SET last_success_at = $2
		WHERE id = $1 AND (last_success_at IS NULL OR last_success_at < $2::timestamptz - interval '1 second')`
	markRetry = `UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $3,
		claimed_until = NULL, claim_token = NULL, last_error = $4 WHERE id = $1 AND claim_token = $2`
	markFailed = `UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, finished_at = $3,
		claimed_until = NULL, claim_token = NULL, last_error = $4 WHERE id = $1 AND claim_token = $2`
	disableEndpoint = `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $3
		WHERE id = $1 AND enabled AND (last_success_at IS NULL OR last_success_at < $2) RETURNING id`
	failEndpointDeliveries = `UPDATE webhook_deliveries SET status = 'failed', finished_at = $2, claimed_until = NULL,
		claim_token = NULL, last_error = 'endpoint disabled' WHERE endpoint_id = $1 AND status = 'pending'`
)

// record stores an attempt and moves its delivery on: succeeded, due again
// after a backoff, or failed once the retry window is over. The claim
// token makes a stale claimant's record (its lease ran out and another
// dispatcher took over) change nothing but the attempt log.
func (d *Dispatcher) record(ctx context.Context, j job, r result) error {
	now := d.cfg.Now()
	if len(r.err) > maxErrorText {
		r.err = r.err[:maxErrorText]
	}
	var status *int
	if r.status != 0 {
		status = &r.status
	}
	var errText *string
	if r.err != "" {
		errText = &r.err
	}
	attemptArgs := []any{j.id, j.endpointID, now, status, int(r.latency.Milliseconds()), errText}
	if r.err != "" && !now.Before(j.createdAt.Add(d.cfg.Backoff.RetryWindow)) {
		return d.giveUp(ctx, j, r, now, attemptArgs)
	}
	// One round trip: a batch runs as one implicit transaction, so the
	// attempt and the delivery's new state commit together.
	b := &pgx.Batch{}
	b.Queue(insertAttempt, attemptArgs...)
	outcome := "succeeded"
	if r.err == "" {
		b.Queue(markSucceeded, j.id, j.token, now)
		b.Queue(markEndpointSuccess, j.endpointID, now)
	} else {
		outcome = "retrying"
		b.Queue(markRetry, j.id, j.token, now.Add(d.cfg.Backoff.Delay(j.attempts+1, d.rand())), r.err)
	}
	br := d.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if err == nil && r.err == "" {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recording attempt of delivery %d: %w", j.id, err)
	}
	if tag.RowsAffected() == 0 {
		return nil // our lease ran out (or the delivery was replayed or deleted)
	}
	d.counted(ctx, j, r, outcome)
	return nil
}

// giveUp records the last attempt of a delivery whose retry window is
// over: it fails, and its endpoint is disabled if it has not answered 2xx
// since the delivery began (it failed through the whole window), with its
// other pending deliveries failed alongside.
func (d *Dispatcher) giveUp(ctx context.Context, j job, r result, now time.Time, attemptArgs []any) error {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("recording attempt: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, insertAttempt, attemptArgs...); err != nil {
		return fmt.Errorf("inserting attempt: %w", err)
	}
	tag, err := tx.Exec(ctx, markFailed, j.id, j.token, now, r.err)
	if err != nil {
		return fmt.Errorf("failing delivery %d: %w", j.id, err)
	}
	if tag.RowsAffected() == 0 {
		return tx.Commit(ctx) // our lease ran out (or the delivery was replayed or deleted)
	}
	reason := fmt.Sprintf("every delivery failed for %s (last error: %s)", d.cfg.Backoff.RetryWindow, r.err)
	var id string
	disabled := true
	switch err := tx.QueryRow(ctx, disableEndpoint, j.endpointID, j.createdAt, reason).Scan(&id); {
	case errors.Is(err, pgx.ErrNoRows):
		disabled = false
	case err != nil:
		return fmt.Errorf("disabling endpoint %s: %w", j.endpointID, err)
	default:
		if _, err := tx.Exec(ctx, failEndpointDeliveries, j.endpointID, now); err != nil {
			return fmt.Errorf("failing deliveries of disabled endpoint %s: %w", j.endpointID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing attempt: %w", err)
	}
	d.counted(ctx, j, r, "failed")
	if disabled {
		d.metrics.disabled.Inc()
		d.logger.WarnContext(ctx, "webhook endpoint disabled: every delivery failed through the retry window", "endpoint", j.endpointID)
	}
	return nil
}

// counted updates the metrics and logs a failed attempt once its record
// committed.
func (d *Dispatcher) counted(ctx context.Context, j job, r result, outcome string) {
	d.metrics.attempts.WithLabelValues(outcome).Inc()
	if outcome == "succeeded" {
		if j.attempts == 0 {
			d.metrics.latency.Observe(time.Since(j.eventAt).Seconds())
		}
		return
	}
	d.logger.InfoContext(ctx, "webhook attempt failed", "delivery", j.id, "event", j.eventID, "endpoint", j.endpointID,
		"attempt", j.attempts+1, "outcome", outcome, "status", r.status, "err", r.err)
}

// updateGauges reads the queue depth and the oldest pending delivery.
func (d *Dispatcher) updateGauges(ctx context.Context) error {
	var pending, unfanned int64
	var oldest *time.Time
	const q = `SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),
		(SELECT min(created_at) FROM webhook_deliveries WHERE status = 'pending'),
		(SELECT count(*) FROM outbox WHERE delivered_at IS NULL)`
	if err := d.pool.QueryRow(ctx, q).Scan(&pending, &oldest, &unfanned); err != nil {
		return fmt.Errorf("reading queue depth: %w", err)
	}
	d.metrics.pending.Set(float64(pending))
	d.metrics.unfanned.Set(float64(unfanned))
	age := 0.0
	if oldest != nil {
		age = max(d.cfg.Now().Sub(*oldest).Seconds(), 0)
	}
	d.metrics.oldest.Set(age)
	return nil
}
