package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The exceptions inbox: deposits that did not count (ledger entries of
// kind exception) and payouts parked in needs_attention, as one list per
// merchant, and what the merchant can do about each (schema 0015).
//
// Ids: exc_<ledger_entries.id> for a ledger exception, exc_payout_<payouts.id>
// for a payout that needs attention (reason needs_attention). Both are
// stable and say which table the item lives in, so a cursor or an action
// never has to guess.
//
// An exception a reorg removed (its deposit's block was replaced, and the
// reconciler wrote the matching unapply entry) is not money settle holds:
// it leaves the inbox. If its block comes back, the reconciler records the
// deposit again under a new entry, which is a new item.

// Exception reasons the store acts on (reconciler/attribute.go names them
// all; these are the ones whose rules differ).
const (
	reasonWrongToken   = "wrong_token"
	reasonLate         = "late"
	reasonFinished     = "after_session_finished"
	reasonOverpaid     = "overpaid"
	reasonCallReturned = "call_returned"
	reasonDust         = "conversion_dust"
	// ReasonNeedsAttention is the reason of a payout item.
	ReasonNeedsAttention = "needs_attention"
)

// Exception statuses.
const (
	ExceptionOpen     = "open"
	ExceptionRefunded = "refunded"
	ExceptionCredited = "credited"
	ExceptionResolved = "resolved"
)

// MaxExceptionNote bounds a resolution's note (the schema checks it too).
const MaxExceptionNote = 500

// Exception is one item of a merchant's exceptions inbox.
type Exception struct {
	ID        string
	Reason    string
	Status    string
	SessionID string
	// PaymentID is the session's Payments API id, "" for a Sessions API
	// session.
	PaymentID string
	ChainID   uint64
	// Token is the token's address as the ledger holds it; Symbol and
	// Decimals are what the ledger recorded ("" and 0 when it did not
	// know them: a token settle does not accept, or an entry that left
	// them out).
	Token       string
	Symbol      string
	Decimals    uint8
	Amount      *big.Int
	From, To    string
	TxHash      string
	LogIndex    uint32
	BlockNumber uint64
	CreatedAt   time.Time
	Resolution  *Resolution
}

// Resolution is what was done about an exception.
type Resolution struct {
	Action string // refund, credit, resolve
	Note   string
	// TxHash is the refund's transaction once the executor signed it (the
	// hash the chain showed, once seen); "" before, and for other actions.
	TxHash string
	At     time.Time
	// APIKeyID is who acted ("" for an operator's abandon of a payout).
	APIKeyID string
	// RefundPayoutID is the payout that pays the refund (0: none).
	RefundPayoutID int64
}

// ExceptionFilter narrows a list; empty fields match everything.
type ExceptionFilter struct {
	Status string
	Reason string
}

// ExceptionCursor is a position in a merchant's inbox: the keyset of the
// item a page starts after. Zero value: the first page.
type ExceptionCursor struct {
	at  time.Time
	src int // 0 ledger entry, 1 payout
	num int64
	ok  bool
}

// exceptionRef is a parsed exception id.
type exceptionRef struct {
	src int
	num int64
}

// parseExceptionID reads exc_<n> or exc_payout_<n>; anything else is
// ErrNotFound, the same answer as an id that does not exist.
func parseExceptionID(id string) (exceptionRef, error) {
	rest, ok := strings.CutPrefix(id, "exc_")
	if !ok {
		return exceptionRef{}, ErrNotFound
	}
	ref := exceptionRef{}
	if n, ok := strings.CutPrefix(rest, "payout_"); ok {
		ref.src, rest = 1, n
	}
	// Digits only (no sign, no leading zero): one id per item.
	if rest == "" || len(rest) > 18 || rest[0] == '0' || strings.Trim(rest, "0123456789") != "" {
		return exceptionRef{}, ErrNotFound
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return exceptionRef{}, ErrNotFound
	}
	ref.num = n
	return ref, nil
}

func (r exceptionRef) id() string {
	if r.src == 1 {
		return fmt.Sprintf("exc_payout_%d", r.num)
	}
	return fmt.Sprintf("exc_%d", r.num)
}

// ledgerItems and payoutItems select merchant $1's items of each kind,
// one row each, with the columns scanException reads plus the keyset
// (created_at, src, num). A list runs each as its own ordered, limited
// scan of an index (ledger_entries_exceptions_idx, payouts_parked_idx) and
// merges the two, so a page costs the same however many exceptions the
// merchant has.
//
// Ledger exceptions: entries of kind exception not removed by a reorg.
// Payouts: those in needs_attention (open unless the merchant resolved
// them) and those an operator abandoned (resolved, by the operator).
const ledgerItems = `
SELECT 0 AS src, e.id AS num, e.reason, e.session_id, coalesce(s.payment_id, '') AS payment_id, e.chain_id, e.token, e.symbol,
       e.decimals, e.amount::text AS amount, e.from_address, e.to_address, e.tx_hash, e.log_index, e.block_number,
       e.recorded_at AS created_at, coalesce(r.status, 'open') AS status, r.action, coalesce(r.note, '') AS note, r.created_at AS resolved_at,
       coalesce(r.api_key_id, '') AS api_key_id, coalesce(r.refund_payout_id, 0) AS refund_payout_id,
       coalesce(rp.seen_tx_hash, rp.tx_hash, '') AS resolution_tx
FROM ledger_entries e
JOIN sessions s ON s.id = e.session_id
LEFT JOIN exception_resolutions r ON r.ledger_entry_id = e.id
LEFT JOIN payouts rp ON rp.id = r.refund_payout_id
WHERE e.kind = 'exception' AND e.merchant_id = $1
  AND NOT EXISTS (SELECT 1 FROM ledger_entries u WHERE u.entry_id = 'unapply:' || substr(e.entry_id, length('exception:') + 1)
                  AND e.entry_id LIKE 'exception:%')`

// payoutStatus is a payout item's status.
const payoutStatus = `CASE WHEN r.id IS NOT NULL THEN r.status WHEN p.status = 'abandoned' THEN 'resolved' ELSE 'open' END`

const payoutItems = `
SELECT 1 AS src, p.id AS num, 'needs_attention' AS reason, p.session_id, coalesce(s.payment_id, '') AS payment_id, p.chain_id, p.token, '' AS symbol,
       0::smallint AS decimals, p.amount::text AS amount, coalesce(p.from_address, '') AS from_address, p.to_address,
       coalesce(p.tx_hash, '') AS tx_hash, 0 AS log_index, coalesce(p.receipt_block_number, 0) AS block_number,
       p.created_at, ` + payoutStatus + ` AS status,
       CASE WHEN r.id IS NOT NULL THEN r.action WHEN p.status = 'abandoned' THEN 'resolve' END AS action,
       CASE WHEN r.id IS NOT NULL THEN r.note WHEN p.status = 'abandoned' THEN 'Taken out of the executor''s hands by an operator: settled by hand.' ELSE '' END AS note,
       coalesce(r.created_at, ab.recorded_at, CASE WHEN p.status = 'abandoned' THEN p.created_at END) AS resolved_at,
       coalesce(r.api_key_id, '') AS api_key_id, 0::bigint AS refund_payout_id, '' AS resolution_tx
FROM payouts p
JOIN sessions s ON s.id = p.session_id
LEFT JOIN exception_resolutions r ON r.payout_id = p.id
LEFT JOIN LATERAL (SELECT o.recorded_at FROM ledger_entries o
                   WHERE p.status = 'abandoned' AND o.session_id = p.session_id AND o.kind = 'operator' AND o.reason = 'payout_abandon'
                     AND o.entry_id LIKE 'operator:abandon:' || p.id || ':%'
                   ORDER BY o.id DESC LIMIT 1) ab ON true
WHERE p.status IN ('needs_attention', 'abandoned') AND s.merchant_id = $1`

const exceptionColumns = `src, num, reason, session_id, payment_id, chain_id, token, symbol, decimals, amount, from_address, to_address,
	tx_hash, log_index, block_number, created_at, status, action, note, resolved_at, api_key_id, refund_payout_id, resolution_tx`

func scanException(row pgx.Row) (*Exception, error) {
	var (
		e                                  Exception
		ref                                exceptionRef
		chainID, block, refundPayout       int64
		decimals                           int16
		logIndex                           int32
		amount, note, apiKey, resolutionTx string
		action                             *string
		resolvedAt                         *time.Time
	)
	if err := row.Scan(&ref.src, &ref.num, &e.Reason, &e.SessionID, &e.PaymentID, &chainID, &e.Token, &e.Symbol, &decimals, &amount,
		&e.From, &e.To, &e.TxHash, &logIndex, &block, &e.CreatedAt, &e.Status, &action, &note, &resolvedAt, &apiKey,
		&refundPayout, &resolutionTx); err != nil {
		return nil, err
	}
	e.ID = ref.id()
	e.ChainID, e.BlockNumber, e.LogIndex, e.Decimals = uint64(chainID), uint64(block), uint32(logIndex), uint8(decimals)
	var ok bool
	if e.Amount, ok = new(big.Int).SetString(amount, 10); !ok {
		return nil, fmt.Errorf("exception %s: amount %q is not an integer", e.ID, amount)
	}
	if action != nil {
		e.Resolution = &Resolution{Action: *action, Note: note, TxHash: resolutionTx, APIKeyID: apiKey, RefundPayoutID: refundPayout}
		if resolvedAt != nil {
			e.Resolution.At = *resolvedAt
		}
	}
	return &e, nil
}

// ListExceptions returns up to limit items of the merchant's inbox
// matching f, newest first (created_at, then id, descending: immutable,
// so concurrent inserts never make a page skip or repeat an item),
// starting after cursor.
func (s *Store) ListExceptions(ctx context.Context, merchantID string, f ExceptionFilter, after ExceptionCursor, limit int) ([]*Exception, error) {
	args := []any{merchantID}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// A literal, not a parameter: a generic plan that does not know the
	// limit may sort the merchant's whole list instead of walking an
	// index for one page.
	lim := strconv.Itoa(max(1, limit))
	var parts []string
	if f.Reason != ReasonNeedsAttention {
		q := ledgerItems
		if f.Reason != "" {
			q += " AND e.reason = " + arg(f.Reason)
		}
		if f.Status != "" {
			q += " AND coalesce(r.status, 'open') = " + arg(f.Status)
		}
		if after.ok {
			// (created_at, src, num) < cursor, for src 0: a payout
			// cursor (src 1) admits every entry of its instant.
			num := after.num
			if after.src == 1 {
				num = math.MaxInt64
			}
			q += fmt.Sprintf(" AND (e.recorded_at, e.id) < (%s, %s)", arg(after.at), arg(num))
		}
		parts = append(parts, "("+q+" ORDER BY e.recorded_at DESC, e.id DESC LIMIT "+lim+")")
	}
	if f.Reason == "" || f.Reason == ReasonNeedsAttention {
		q := payoutItems
		if f.Status != "" {
			q += " AND " + payoutStatus + " = " + arg(f.Status)
		}
		if after.ok {
			// The same for src 1: a ledger cursor (src 0) admits no
			// payout of its instant (ids are positive).
			num := after.num
			if after.src == 0 {
				num = 0
			}
			q += fmt.Sprintf(" AND (p.created_at, p.id) < (%s, %s)", arg(after.at), arg(num))
		}
		parts = append(parts, "("+q+" ORDER BY p.created_at DESC, p.id DESC LIMIT "+lim+")")
	}
	q := `SELECT ` + exceptionColumns + ` FROM (` + strings.Join(parts, " UNION ALL ") + `) x ORDER BY created_at DESC, src DESC, num DESC LIMIT ` + lim
	rows, err := s.db(ctx).Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing exceptions: %w", err)
	}
	defer rows.Close()
	var out []*Exception
	for rows.Next() {
		e, err := scanException(rows)
		if err != nil {
			return nil, fmt.Errorf("listing exceptions: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing exceptions: %w", err)
	}
	return out, nil
}

// ExceptionCursorOf returns the position of item id in the merchant's
// inbox, for starting_after; ErrNotFound when it is not one of the
// merchant's items (unknown, malformed, or another merchant's).
func (s *Store) ExceptionCursorOf(ctx context.Context, merchantID, id string) (ExceptionCursor, error) {
	e, ref, err := s.getException(ctx, s.db(ctx), merchantID, id)
	if err != nil {
		return ExceptionCursor{}, err
	}
	return ExceptionCursor{at: e.CreatedAt, src: ref.src, num: ref.num, ok: true}, nil
}

// GetException returns one item of the merchant's inbox; another
// merchant's item is ErrNotFound, like a missing one.
func (s *Store) GetException(ctx context.Context, merchantID, id string) (*Exception, error) {
	e, _, err := s.getException(ctx, s.db(ctx), merchantID, id)
	return e, err
}

func (s *Store) getException(ctx context.Context, db dbtx, merchantID, id string) (*Exception, exceptionRef, error) {
	ref, err := parseExceptionID(id)
	if err != nil {
		return nil, ref, err
	}
	q := `SELECT ` + exceptionColumns + ` FROM (` + ledgerItems + ` AND e.id = $2) x`
	if ref.src == 1 {
		q = `SELECT ` + exceptionColumns + ` FROM (` + payoutItems + ` AND p.id = $2) x`
	}
	e, err := scanException(db.QueryRow(ctx, q, merchantID, ref.num))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ref, ErrNotFound
	}
	if err != nil {
		return nil, ref, fmt.Errorf("reading exception %s: %w", id, err)
	}
	return e, ref, nil
}

// APIKeyID returns the id of an unrevoked API key, the "who" of an
// action's audit entry.
func (s *Store) APIKeyID(ctx context.Context, key string) (string, error) {
	var id string
	err := s.db(ctx).QueryRow(ctx, `SELECT id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, HashAPIKey(key)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up api key: %w", err)
	}
	return id, nil
}

// IsRunner reports whether address (EVM, any case) is the runner of a
// call payout: a single-use contract address whose balance that payout's
// execute moves.
func (s *Store) IsRunner(ctx context.Context, address string) (bool, error) {
	var ok bool
	err := s.db(ctx).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM payouts WHERE runner_address = lower($1))`, address).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("looking up runner %s: %w", address, err)
	}
	return ok, nil
}

// ExceptionConflict is why an action does not apply to an exception as it
// is now. It matches ErrConflict; Code is the API's error code.
type ExceptionConflict struct {
	Code    string
	Message string
}

func (e *ExceptionConflict) Error() string { return e.Code + ": " + e.Message }

// Unwrap makes an ExceptionConflict match ErrConflict.
func (e *ExceptionConflict) Unwrap() error { return ErrConflict }

func conflict(code, format string, args ...any) error {
	return &ExceptionConflict{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ExceptionAction is who acts on which exception, and why.
type ExceptionAction struct {
	MerchantID string
	APIKeyID   string
	ID         string
	// Note is the merchant's note: required for resolve, optional
	// otherwise; at most MaxExceptionNote characters.
	Note string
}

// lockedException is an exception read inside an action's transaction,
// after its session's lock.
type lockedException struct {
	*Exception
	ref           exceptionRef
	entryID       string
	sessionStatus string
	// settled: the session has a delivery or a refund (its bounce).
	settled bool
}

// RefundException schedules the refund of exception a.ID to address to
// (already checked by the caller: a valid address that is none of
// settle's own) as a payout of kind exception_refund, which the delivery
// executor signs and sends like any other; nothing here touches a chain.
// It returns the exception as it is after the action.
//
// Invariants (each has an attacking test in exceptions_test.go):
//   - at most once per exception, also under concurrent requests: the
//     session's row lock serialises actions, and the unique keys on
//     payouts.exception_id and exception_resolutions.ledger_entry_id
//     make a second refund fail even if that lock were bypassed;
//   - the amount, token and chain are the exception's, from the ledger,
//     never from the request;
//   - only the owning merchant's exception (another's is ErrNotFound),
//     and only an open one;
//   - only money settle holds and can pay in kind: a late or
//     after_session_finished deposit once it is final (no reorg can take
//     it back), or a held amount in the treasury (overpaid surplus,
//     conversion dust, what a merchant's call returned) once the session
//     succeeded: before that its delivery may still revert, and the
//     bounce would refund every deposit, the held part included. A token
//     settle does not accept (wrong_token) is never paid from the
//     treasury, which does not hold it; manual_refund (deposits in
//     several tokens) has no single amount to pay.
func (s *Store) RefundException(ctx context.Context, a ExceptionAction, to string) (*Exception, error) {
	to = strings.ToLower(to)
	err := s.exceptionTx(ctx, a, func(tx pgx.Tx, x *lockedException) error {
		if x.ref.src == 1 {
			return conflict("action_not_allowed", "A payout that needs attention is retried or abandoned by an operator (settle payouts retry|abandon); it cannot be refunded here.")
		}
		switch x.Reason {
		case reasonLate, reasonFinished:
			if err := depositActionable(ctx, tx, x, "refunded"); err != nil {
				return err
			}
		case reasonOverpaid, reasonDust, reasonCallReturned:
			if x.sessionStatus != "succeeded" {
				return conflict("session_not_settled", "The session is %s: until its delivery is final, a bounce may still refund this amount with the deposits. Try again once the session succeeded.", x.sessionStatus)
			}
		case reasonWrongToken:
			return conflict("exception_not_refundable", "The deposit is in a token settle does not accept; the treasury does not hold it, so settle cannot pay it back. Recover it by hand, then resolve the exception.")
		default:
			return conflict("exception_not_refundable", "An exception with reason %s has no single amount settle can pay back; settle it by hand, then resolve it.", x.Reason)
		}
		if x.Amount.Sign() <= 0 {
			return conflict("exception_not_refundable", "The exception's amount is zero.")
		}
		var payoutID int64
		err := tx.QueryRow(ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, exception_id)
			VALUES ($1, 'exception_refund', $2, $3, $4, $5::numeric, $6) RETURNING id`,
			x.SessionID, int64(x.ChainID), strings.ToLower(x.Token), to, x.Amount.String(), x.ref.num).Scan(&payoutID)
		if err != nil {
			return fmt.Errorf("scheduling the refund: %w", err)
		}
		return resolve(ctx, tx, a, x, "refund", to, payoutID)
	})
	if err != nil {
		return nil, err
	}
	return s.GetException(ctx, a.MerchantID, a.ID)
}

// CreditException counts the deposit of exception a.ID toward its
// session after all: the deposit becomes credited, a deposit ledger entry
// (reason exception_credit) records it, and the session is made due, so
// the reconciler's normal path decides it (delivers if the credited total
// now suffices, waits or bounces otherwise; a bounce refunds the credited
// deposit with the others).
//
// Only while that can still change the outcome: the deposit is in a token
// settle accepts (never wrong_token), final, and its session is
// processing with neither a delivery nor a refund scheduled. That is a
// late top-up of an underpaid session whose bounce is not decided yet;
// an expired or settled session has ended, and its deposit can only be
// refunded or resolved.
func (s *Store) CreditException(ctx context.Context, a ExceptionAction) (*Exception, error) {
	err := s.exceptionTx(ctx, a, func(tx pgx.Tx, x *lockedException) error {
		if x.ref.src == 1 {
			return conflict("action_not_allowed", "A payout that needs attention cannot be credited.")
		}
		switch x.Reason {
		case reasonLate, reasonFinished:
		case reasonWrongToken:
			return conflict("exception_not_creditable", "The deposit is in a token settle does not accept; it can never count toward a session.")
		default:
			return conflict("exception_not_creditable", "Only a late or after_session_finished deposit can be credited, not an exception with reason %s.", x.Reason)
		}
		if x.sessionStatus != "processing" || x.settled {
			state := x.sessionStatus
			if x.settled {
				state += " with its payout scheduled"
			}
			return conflict("session_not_creditable", "The session is %s: a deposit can be credited only while the session is processing and nothing is paid out or refunded yet.", state)
		}
		dep, err := lockDeposit(ctx, tx, x)
		if err != nil {
			return err
		}
		if err := dep.actionable("credited"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE deposits SET credited = true, exception = NULL WHERE id = $1`, dep.id); err != nil {
			return fmt.Errorf("crediting deposit %d: %w", dep.id, err)
		}
		// The id the reconciler gives a credited application of this
		// deposit, so finance's reorg arithmetic (deposit: ↔ unapply:)
		// holds for it as for any other.
		entryID := "deposit:" + strings.TrimPrefix(x.entryID, "exception:")
		if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
			from_address, to_address, tx_hash, log_index, block_number, amount, event_time)
			SELECT $2, 'deposit', 'exception_credit', session_id, merchant_id, chain_id, token, symbol, decimals,
			       from_address, to_address, tx_hash, log_index, block_number, amount, event_time
			FROM ledger_entries WHERE id = $1`, x.ref.num, entryID); err != nil {
			return fmt.Errorf("recording the credited deposit: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE sessions SET settle_check_at = '-infinity', settle_wait = NULL WHERE id = $1`, x.SessionID); err != nil {
			return fmt.Errorf("marking session %s due: %w", x.SessionID, err)
		}
		return resolve(ctx, tx, a, x, "credit", "", 0)
	})
	if err != nil {
		return nil, err
	}
	return s.GetException(ctx, a.MerchantID, a.ID)
}

// ResolveException marks an open exception (or a payout that needs
// attention) resolved with the merchant's note. Nothing else changes: the
// money stays where it is, and the ledger records who said what.
func (s *Store) ResolveException(ctx context.Context, a ExceptionAction) (*Exception, error) {
	a.Note = strings.TrimSpace(a.Note)
	if a.Note == "" || len([]rune(a.Note)) > MaxExceptionNote {
		return nil, fmt.Errorf("resolving %s: a note of 1 to %d characters is required", a.ID, MaxExceptionNote)
	}
	err := s.exceptionTx(ctx, a, func(tx pgx.Tx, x *lockedException) error {
		return resolve(ctx, tx, a, x, "resolve", "", 0)
	})
	if err != nil {
		return nil, err
	}
	return s.GetException(ctx, a.MerchantID, a.ID)
}

// exceptionTx runs fn on exception a.ID in one transaction that holds its
// session's row lock, the lock every path that changes a session's
// deposits and payouts takes first (the reconciler's too), so the checks
// fn makes cannot go stale before it commits. Actions on one exception
// (and on one session) are serialised by it: the second sees the first's
// resolution and is refused as not open.
func (s *Store) exceptionTx(ctx context.Context, a ExceptionAction, fn func(pgx.Tx, *lockedException) error) error {
	if len([]rune(a.Note)) > MaxExceptionNote {
		return fmt.Errorf("acting on %s: the note exceeds %d characters", a.ID, MaxExceptionNote)
	}
	if a.MerchantID == "" || a.APIKeyID == "" {
		return fmt.Errorf("acting on %s: merchant and api key are required", a.ID)
	}
	tx, err := s.db(ctx).Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning exception action: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	// Read unlocked first, only to learn the session (an item's session
	// never changes), then lock the session and read again.
	e, _, err := s.getException(ctx, tx, a.MerchantID, a.ID)
	if err != nil {
		return err
	}
	x := &lockedException{}
	if err := tx.QueryRow(ctx, `SELECT status FROM sessions WHERE id = $1 FOR UPDATE`, e.SessionID).Scan(&x.sessionStatus); err != nil {
		return fmt.Errorf("locking session %s: %w", e.SessionID, err)
	}
	if x.Exception, x.ref, err = s.getException(ctx, tx, a.MerchantID, a.ID); err != nil {
		return err
	}
	if x.Status != ExceptionOpen {
		return conflict("exception_not_open", "This exception is %s already; an action applies only to an open exception.", x.Status)
	}
	if x.ref.src == 0 {
		if err := tx.QueryRow(ctx, `SELECT entry_id FROM ledger_entries WHERE id = $1`, x.ref.num).Scan(&x.entryID); err != nil {
			return fmt.Errorf("reading exception %s: %w", a.ID, err)
		}
	}
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM payouts WHERE session_id = $1 AND kind IN ('delivery', 'refund'))`,
		x.SessionID).Scan(&x.settled); err != nil {
		return fmt.Errorf("reading payouts of session %s: %w", x.SessionID, err)
	}
	if err := fn(tx, x); err != nil {
		if isUniqueViolation(err) {
			// Only reachable if the session lock were bypassed: the
			// unique keys are the last word on "at most once".
			return conflict("exception_not_open", "Another action on this exception won.")
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		if isUniqueViolation(err) {
			return conflict("exception_not_open", "Another action on this exception won.")
		}
		return fmt.Errorf("committing exception action: %w", err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// exceptionDeposit is the deposit row behind a late or
// after_session_finished exception.
type exceptionDeposit struct {
	id       int64
	status   string
	credited bool
}

// lockDeposit locks the deposit whose application the exception's entry
// records (entry ids carry the block hash and the application number,
// see reconciler.applicationID). None: the deposit was re-applied under a
// newer entry after a reorg, so this entry no longer stands for it.
func lockDeposit(ctx context.Context, tx pgx.Tx, x *lockedException) (*exceptionDeposit, error) {
	var d exceptionDeposit
	err := tx.QueryRow(ctx, `SELECT id, status::text, credited FROM deposits
		WHERE session_id = $1 AND chain_id = $2 AND tx_hash = $3 AND log_index = $4
		  AND $5 = 'exception:' || chain_id || ':' || block_hash || ':' || tx_hash || ':' || log_index
		           || CASE WHEN applications > 1 THEN ':' || applications ELSE '' END
		FOR UPDATE`, x.SessionID, int64(x.ChainID), x.TxHash, int32(x.LogIndex), x.entryID).Scan(&d.id, &d.status, &d.credited)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, conflict("deposit_reorged", "A reorg replaced this deposit's block; the transfer is no longer where this exception says.")
	}
	if err != nil {
		return nil, fmt.Errorf("locking the exception's deposit: %w", err)
	}
	return &d, nil
}

// actionable says whether a deposit can be refunded or credited now.
func (d *exceptionDeposit) actionable(what string) error {
	switch {
	case d.status == "orphaned":
		return conflict("deposit_reorged", "A reorg removed this deposit's block; there is nothing to act on.")
	case d.status != "final":
		return conflict("deposit_not_final", "The deposit is not final yet (a reorg could still remove it); it can be %s once it is.", what)
	case d.credited:
		return conflict("exception_not_open", "The deposit is credited already.")
	}
	return nil
}

func depositActionable(ctx context.Context, tx pgx.Tx, x *lockedException, what string) error {
	d, err := lockDeposit(ctx, tx, x)
	if err != nil {
		return err
	}
	return d.actionable(what)
}

// resolve records an action: the audit entry in the ledger (kind
// operator, amount 0: the money an action moves has its own entries; who
// is the API key), then the resolution that closes the exception. Both
// commit with the action's effect or not at all.
func resolve(ctx context.Context, tx pgx.Tx, a ExceptionAction, x *lockedException, action, to string, payoutID int64) error {
	status := map[string]string{"refund": ExceptionRefunded, "credit": ExceptionCredited, "resolve": ExceptionResolved}[action]
	// Deterministic: a second action on the same item clashes here too.
	entryID := fmt.Sprintf("operator:exception_%s:%s", action, x.ID)
	var auditID int64
	err := tx.QueryRow(ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, log_index, block_number, amount, event_time, operator, note)
		VALUES ($1, 'operator', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, now(), $14, $15) RETURNING id`,
		entryID, "exception_"+action, x.SessionID, a.MerchantID, int64(x.ChainID), x.Token, x.Symbol, int16(x.Decimals),
		x.From, cmp.Or(to, x.To), x.TxHash, int32(x.LogIndex), int64(x.BlockNumber), "api_key:"+a.APIKeyID, a.Note).Scan(&auditID)
	if err != nil {
		return fmt.Errorf("recording the audit entry: %w", err)
	}
	var ledgerID, parkedID, refundID *int64
	if x.ref.src == 0 {
		ledgerID = &x.ref.num
	} else {
		parkedID = &x.ref.num
	}
	if payoutID != 0 {
		refundID = &payoutID
	}
	if _, err := tx.Exec(ctx, `INSERT INTO exception_resolutions (ledger_entry_id, payout_id, merchant_id, action, status, note, api_key_id,
		refund_payout_id, audit_entry_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		ledgerID, parkedID, a.MerchantID, action, status, a.Note, a.APIKeyID, refundID, auditID); err != nil {
		return fmt.Errorf("recording the resolution: %w", err)
	}
	return nil
}
