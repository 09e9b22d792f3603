package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/view"
)

// Event types. A Sessions API session emits session.<status> on every
// status change; a Payments API session emits only the seed's three
// webhook types. Both emit the deposit events.
const (
	EventSessionCreated        = "session.created"
	EventSessionWaitingPayment = "session.waiting_payment"
	EventSessionProcessing     = "session.processing"
	EventSessionSucceeded      = "session.succeeded"
	EventSessionBounced        = "session.bounced"
	EventSessionExpired        = "session.expired"
	EventPaymentStarted        = "payment_started"
	EventPaymentCompleted      = "payment_completed"
	EventPaymentBounced        = "payment_bounced"
	EventDepositException      = "deposit.exception"
	EventDepositReorged        = "deposit.reorged"
)

// EventTypes are every type the log holds, for filters.
var EventTypes = []string{
	EventSessionCreated, EventSessionWaitingPayment, EventSessionProcessing, EventSessionSucceeded,
	EventSessionBounced, EventSessionExpired, EventPaymentStarted, EventPaymentCompleted, EventPaymentBounced,
	EventDepositException, EventDepositReorged,
}

// EventIDPrefix starts every event id.
const EventIDPrefix = "evt_"

// Change is one change a merchant can observe, as RecordEvent reports it.
type Change struct {
	SessionID string
	// Type is empty for a status change: the type follows from the status
	// the change left the session in and from the API that created it.
	// EventDepositException and EventDepositReorged name the ledger entry
	// (an exception, or the unapply of a credited deposit) in
	// LedgerEntryID.
	Type          string
	LedgerEntryID int64
	// At is the event's createdAt: the clock of whoever made the change.
	// Zero means time.Now.
	At time.Time
}

// Event is one row of the event log.
type Event struct {
	ID         string // evt_…
	Type       string
	MerchantID string
	SubjectID  string // the session's id, or the payment's for a Payments API session
	Sequence   int64
	IsTest     bool
	CreatedAt  time.Time
	// Payload is the complete body as a webhook delivers it (EventBody).
	Payload     json.RawMessage
	DeliveredAt *time.Time
	// Row is outbox.id: the fan-out order, not an API id.
	Row int64
}

// EventBody is an event as delivered and as GET /v1/events returns it.
type EventBody struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Sequence    int64     `json:"sequence"`
	CreatedAt   string    `json:"createdAt"`
	IsTestEvent bool      `json:"isTestEvent"`
	Data        EventData `json:"data"`
}

// EventData is what an event is about. Session is set on the deposit
// events only: the session (or payment) the transfer went to.
type EventData struct {
	Object  any `json:"object"`
	Session any `json:"session,omitempty"`
}

// RecordEvent is the one writer of the event log. It runs inside the
// transaction of the change, after the change: it reads the session as the
// transaction now has it, renders the object with internal/view exactly
// as the API returns it, draws the subject's next sequence and inserts the
// row. It returns nil when the change has no event (a Payments API
// session's create, payment method, expiry and reorg back to waiting: the
// seed's Payments API has no type for them).
//
// The sequence comes from sessions.event_seq, incremented in place: the
// UPDATE takes (or already holds) the session's row lock until commit, so
// a subject's sequences are gapless and in commit order under any
// concurrency.
//
// The object's status is the stored status as this change leaves it, not
// the read-time expiry of session.StatusAt: an expiry is its own event
// (session.expired) once the expiry loop persists it.
func RecordEvent(ctx context.Context, tx pgx.Tx, c Change) (*Event, error) {
	ss, err := getSession(ctx, tx, c.SessionID, []int64{})
	if err != nil {
		return nil, fmt.Errorf("recording event of session %s: %w", c.SessionID, err)
	}
	at := c.At
	if at.IsZero() {
		at = time.Now()
	}
	subject := ss.ID
	if ss.Payment != nil {
		subject = ss.Payment.ID
	}
	typ, data := c.Type, EventData{}
	switch typ {
	case "":
		typ = statusEventType(ss)
		if typ == "" {
			return nil, nil
		}
		data.Object = eventObject(ss, at)
	case EventDepositException, EventDepositReorged:
		e, err := ledgerEntry(ctx, tx, c.LedgerEntryID)
		if err != nil {
			return nil, err
		}
		if e.SessionID != ss.ID {
			return nil, fmt.Errorf("recording %s: ledger entry %d is of session %s, not %s", typ, c.LedgerEntryID, e.SessionID, ss.ID)
		}
		if ss.Payment != nil {
			e.PaymentID = ss.Payment.ID
		}
		data.Object, data.Session = view.ExceptionOf(e), eventObject(ss, at)
	default:
		return nil, fmt.Errorf("recording event: unknown type %q", typ)
	}
	ev := &Event{ID: EventIDPrefix + randomToken(18), Type: typ, MerchantID: ss.MerchantID, SubjectID: subject, CreatedAt: at}
	if err := tx.QueryRow(ctx, `UPDATE sessions SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq`, ss.ID).Scan(&ev.Sequence); err != nil {
		return nil, fmt.Errorf("drawing event sequence of session %s: %w", ss.ID, err)
	}
	if err := writeEvent(ctx, tx, ev, data); err != nil {
		return nil, fmt.Errorf("writing event %s of session %s: %w", typ, ss.ID, err)
	}
	return ev, nil
}

// EventWebhookTest is the type of the event POST /v1/webhooks/{id}/test
// sends.
const EventWebhookTest = "webhook.test"

// TestEvent is a test event for one webhook endpoint.
type TestEvent struct {
	MerchantID string
	// EndpointID is the event's subject; Object is its data.object.
	EndpointID string
	Object     any
	At         time.Time
}

// RecordTestEvent writes a test event (isTestEvent true) to the log, the
// same way RecordEvent writes the others. Its subject is the endpoint, with
// a sequence of its own: the caller must hold the endpoint's row lock in
// tx, which orders concurrent tests. The row is written as already fanned
// out (delivered_at set): the caller queues the one delivery it has, to
// its endpoint, in the same transaction.
func RecordTestEvent(ctx context.Context, tx pgx.Tx, t TestEvent) (*Event, error) {
	at := t.At
	if at.IsZero() {
		at = time.Now()
	}
	ev := &Event{ID: EventIDPrefix + randomToken(18), Type: EventWebhookTest, MerchantID: t.MerchantID, SubjectID: t.EndpointID,
		IsTest: true, CreatedAt: at, DeliveredAt: &at}
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(sequence), 0) + 1 FROM outbox WHERE subject_id = $1`, t.EndpointID).Scan(&ev.Sequence); err != nil {
		return nil, fmt.Errorf("numbering test event of endpoint %s: %w", t.EndpointID, err)
	}
	if err := writeEvent(ctx, tx, ev, EventData{Object: t.Object}); err != nil {
		return nil, fmt.Errorf("writing test event of endpoint %s: %w", t.EndpointID, err)
	}
	return ev, nil
}

// writeEvent renders ev's body and inserts its outbox row, filling
// ev.Payload and ev.Row.
func writeEvent(ctx context.Context, tx pgx.Tx, ev *Event, data EventData) error {
	body := EventBody{ID: ev.ID, Type: ev.Type, Sequence: ev.Sequence, CreatedAt: strconv.FormatInt(ev.CreatedAt.Unix(), 10),
		IsTestEvent: ev.IsTest, Data: data}
	var err error
	if ev.Payload, err = json.Marshal(body); err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	const q = `INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, is_test, payload, created_at, delivered_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`
	return tx.QueryRow(ctx, q, ev.ID, ev.MerchantID, ev.Type, ev.SubjectID, ev.Sequence, ev.IsTest, ev.Payload, ev.CreatedAt, ev.DeliveredAt).Scan(&ev.Row)
}

// statusEventType is the event a session's current status reports, ""
// for none.
func statusEventType(ss *session.Session) string {
	if ss.Payment == nil {
		if ss.Status == session.RequiresPaymentMethod {
			return EventSessionCreated
		}
		return "session." + string(ss.Status)
	}
	switch ss.Status {
	case session.Processing:
		return EventPaymentStarted
	case session.Succeeded:
		return EventPaymentCompleted
	case session.Bounced:
		return EventPaymentBounced
	}
	return ""
}

// eventObject is the session as its API's GET returns it to the merchant:
// the full Session, or the Payment.
func eventObject(ss *session.Session, at time.Time) any {
	if ss.Payment != nil {
		return view.PaymentOf(ss, at)
	}
	return view.Full(ss, ss.Status)
}

// ledgerEntry reads what the Exception object shows of a ledger entry.
func ledgerEntry(ctx context.Context, tx pgx.Tx, id int64) (view.LedgerEntry, error) {
	var (
		e                 view.LedgerEntry
		chainID, block    int64
		decimals          int16
		logIndex          int32
		amount            string
		kind, reason, sid string
	)
	const q = `SELECT kind, reason, session_id, chain_id, token, symbol, decimals, from_address, to_address, tx_hash,
		log_index, block_number, amount::text, recorded_at FROM ledger_entries WHERE id = $1`
	err := tx.QueryRow(ctx, q, id).Scan(&kind, &reason, &sid, &chainID, &e.Token, &e.Symbol, &decimals, &e.From, &e.To, &e.TxHash,
		&logIndex, &block, &amount, &e.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("ledger entry %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("reading ledger entry %d: %w", id, err)
	}
	e.ID, e.Reason, e.SessionID = id, reason, sid
	e.ChainID, e.BlockNumber, e.Decimals, e.LogIndex = uint64(chainID), uint64(block), uint8(decimals), uint32(logIndex)
	if e.Amount, _ = new(big.Int).SetString(amount, 10); e.Amount == nil {
		return e, fmt.Errorf("ledger entry %d: amount %q is not an integer", id, amount)
	}
	return e, nil
}

// EventQuery selects a page of a merchant's events, newest first.
type EventQuery struct {
	MerchantID string
	// Type and Subject filter when set (Subject: a session or payment id).
	Type, Subject string
	// StartingAfter is the event id the page starts after; "" for the
	// first page. ListEvents answers ErrNotFound when it is not one of
	// the merchant's events.
	StartingAfter string
	Limit         int
}

// ListEvents returns a page of events by (created_at, id) descending: an
// immutable unique key, so concurrent inserts neither skip nor repeat a
// row across pages. Served by the outbox_merchant_* indexes.
func (s *Store) ListEvents(ctx context.Context, q EventQuery) ([]Event, error) {
	db := s.db(ctx)
	// The filters are spelled into the statement rather than written as
	// "$n = '' OR …", so each shape plans onto its own index.
	where, args := "merchant_id = $1", []any{q.MerchantID}
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if q.Type != "" {
		where += " AND topic = " + arg(q.Type)
	}
	if q.Subject != "" {
		where += " AND subject_id = " + arg(q.Subject)
	}
	if q.StartingAfter != "" {
		var at time.Time
		var id int64
		err := db.QueryRow(ctx, `SELECT created_at, id FROM outbox WHERE event_id = $1 AND merchant_id = $2`, q.StartingAfter, q.MerchantID).
			Scan(&at, &id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("event %s: %w", q.StartingAfter, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("reading event cursor: %w", err)
		}
		where += " AND (created_at, id) < (" + arg(at) + ", " + arg(id) + ")"
	}
	sel := `SELECT ` + eventColumns + ` FROM outbox WHERE ` + where + ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(q.Limit)
	rows, err := db.Query(ctx, sel, args...)
	if err != nil {
		return nil, fmt.Errorf("listing events: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("listing events: %w", err)
	}
	return out, nil
}

const eventColumns = `id, event_id, topic, merchant_id, subject_id, sequence, is_test, created_at, payload, delivered_at`

// GetEvent returns one of a merchant's events by id; another merchant's
// is ErrNotFound like an unknown one.
func (s *Store) GetEvent(ctx context.Context, merchantID, eventID string) (*Event, error) {
	rows, err := s.db(ctx).Query(ctx, `SELECT `+eventColumns+` FROM outbox WHERE event_id = $1 AND merchant_id = $2`, eventID, merchantID)
	if err != nil {
		return nil, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	ev, err := pgx.CollectExactlyOneRow(rows, scanEvent)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return &ev, nil
}

func scanEvent(row pgx.CollectableRow) (Event, error) {
	var e Event
	err := row.Scan(&e.Row, &e.ID, &e.Type, &e.MerchantID, &e.SubjectID, &e.Sequence, &e.IsTest, &e.CreatedAt, &e.Payload, &e.DeliveredAt)
	return e, err
}
