package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
)

// DeriveFunc turns a derivation index into a receiver address in its
// family's canonical form.
type DeriveFunc func(index uint32) (string, error)

// Receiver is a single-use deposit address.
type Receiver struct {
	ID         int64
	Family     string
	Address    string
	Index      uint32
	SessionID  string
	MerchantID string
	CreatedAt  time.Time
}

// SetReceiverPaymentMethod sets a payment method that pays into a fresh
// receiver address (evm, tron, solana) and moves the session to
// waiting_payment.
//
// Setting the same type again is idempotent: the session is returned
// unchanged with the receiver it already has, so a retried request or a
// reloaded checkout page never burns an address. Setting another type adds a
// new payment method, which becomes the latest; receivers of earlier methods
// stay attached to the session. Once a deposit is detected (processing) or the
// session is terminal, the payment method can no longer change: ErrConflict.
//
// The derivation index comes from a Postgres sequence, which never returns a
// value twice, even across crashes and concurrent transactions; the unique
// constraints on receivers turn any bug that would reuse an address into an
// error rather than a shared address.
func (s *Store) SetReceiverPaymentMethod(ctx context.Context, sessionID, pmType, family string, derive DeriveFunc, now time.Time) (ss *session.Session, created *Receiver, err error) {
	return s.setReceiverPaymentMethod(ctx, sessionID, pmType, family, "", derive, now)
}

// SetFiatPaymentMethod sets the fiat payment method: an onramp pays the
// stablecoin it buys into a fresh EVM receiver, which the indexers watch
// like any other. It behaves as SetReceiverPaymentMethod; setting fiat
// again keeps the receiver (and the first fiatMethod).
func (s *Store) SetFiatPaymentMethod(ctx context.Context, sessionID, fiatMethod string, derive DeriveFunc, now time.Time) (*session.Session, *Receiver, error) {
	return s.setReceiverPaymentMethod(ctx, sessionID, "fiat", "evm", fiatMethod, derive, now)
}

func (s *Store) setReceiverPaymentMethod(ctx context.Context, sessionID, pmType, family, fiatMethod string, derive DeriveFunc, now time.Time) (ss *session.Session, created *Receiver, err error) {
	err = pgx.BeginFunc(ctx, s.db(ctx), func(tx pgx.Tx) error {
		// The row lock serialises concurrent calls on one session, so two
		// racing requests cannot both allocate a receiver. It is taken in its
		// own statement: under READ COMMITTED the next statement then reads a
		// fresh snapshot that includes the winner's payment method, which a
		// joined SELECT … FOR UPDATE would not re-read.
		var locked bool
		err := tx.QueryRow(ctx, `SELECT true FROM sessions WHERE id = $1 FOR UPDATE`, sessionID).Scan(&locked)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("locking session: %w", err)
		}
		cur, err := getSession(ctx, tx, sessionID, s.chains)
		if err != nil {
			return err
		}
		switch st := cur.StatusAt(now); {
		case st.Terminal():
			return fmt.Errorf("session is %s; a terminal session cannot change: %w", st, ErrConflict)
		case st == session.Processing:
			return fmt.Errorf("a deposit was already detected; the payment method can no longer change: %w", ErrConflict)
		}
		if cur.PaymentMethod != nil && cur.PaymentMethod.Type == pmType {
			ss = cur
			return nil
		}
		if cur.DeadlinePassed(now) {
			// Past the deadline, but not yet read as expired: the reconcilers
			// have not read that far, so a deposit mined in time may still
			// arrive on the current method. A new one is refused.
			return fmt.Errorf("the session's deadline has passed; the payment method can no longer change: %w", ErrConflict)
		}

		r := &Receiver{Family: family, SessionID: sessionID, MerchantID: cur.MerchantID}
		var index int64
		if err := tx.QueryRow(ctx, `SELECT nextval('receiver_derivation_index_seq')`).Scan(&index); err != nil {
			return fmt.Errorf("drawing derivation index: %w", err)
		}
		r.Index = uint32(index)
		if r.Address, err = derive(r.Index); err != nil {
			return fmt.Errorf("deriving receiver %d: %w", index, err)
		}
		const insReceiver = `INSERT INTO receivers (family, address, derivation_index, session_id, merchant_id, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`
		if err := tx.QueryRow(ctx, insReceiver, family, r.Address, index, sessionID, cur.MerchantID, now).Scan(&r.ID); err != nil {
			return fmt.Errorf("inserting receiver: %w", err)
		}
		r.CreatedAt = now
		const insPM = `INSERT INTO payment_methods (session_id, type, receiver_id, fiat_method, created_at) VALUES ($1, $2, $3, $4, $5)`
		if _, err := tx.Exec(ctx, insPM, sessionID, pmType, r.ID, nullString(fiatMethod), now); err != nil {
			return fmt.Errorf("inserting payment method: %w", err)
		}
		if cur.Status != session.WaitingPayment {
			if err := session.Transition(cur.Status, session.WaitingPayment); err != nil {
				return fmt.Errorf("%w: %w", err, ErrConflict)
			}
			const upd = `UPDATE sessions SET status = 'waiting_payment', updated_at = now() WHERE id = $1`
			if _, err := tx.Exec(ctx, upd, sessionID); err != nil {
				return fmt.Errorf("updating session status: %w", err)
			}
		}
		// Every new payment method is an event, also one that replaces
		// another on a waiting session: the object's paymentMethod changed.
		if _, err := RecordEvent(ctx, tx, Change{SessionID: sessionID, At: now}); err != nil {
			return err
		}
		created = r
		ss, err = getSession(ctx, tx, sessionID, s.chains)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return ss, created, nil
}

// IsReceiver reports whether address is one of our receivers of the given
// family, allocated to any session of any merchant. EVM addresses are
// compared in any letter case (receivers are stored lowercase); other
// families' addresses exactly, as base58 is case-sensitive.
func (s *Store) IsReceiver(ctx context.Context, family, address string) (bool, error) {
	if family == "evm" {
		address = strings.ToLower(address)
	}
	var found bool
	// Served by the UNIQUE (family, address) index.
	const q = `SELECT EXISTS (SELECT 1 FROM receivers WHERE family = $1 AND address = $2)`
	if err := s.db(ctx).QueryRow(ctx, q, family, address).Scan(&found); err != nil {
		return false, fmt.Errorf("looking up receiver %s: %w", address, err)
	}
	return found, nil
}

// ExpireDue persists the expiry of up to limit sessions whose deadline passed
// with no deposit detected, and returns how many it expired. Rows another
// transaction holds (a payment method being set, a deposit being applied) are
// skipped and picked up next time.
//
// A session with a receiver counts as expired only once every expected
// chain's reconciler has attributed final blocks stamped at or after its
// deadline (ExpectChains): a deposit mined before the deadline but not yet
// attributed, or in a block that replaces an unfinal one, must still move it
// to processing, and a persisted expiry would be final. This is the rule
// session.StatusAt applies to readers.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, limit int) (int, error) {
	q := `WITH due AS (
		SELECT id FROM sessions
		WHERE expires_at <= $1
		  AND (status = 'requires_payment_method'
		    OR status = 'waiting_payment' AND expires_at <= COALESCE(` + attributedThrough("$3") + `, $1))
		ORDER BY expires_at
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	)
	UPDATE sessions s SET status = 'expired', updated_at = now()
	FROM due WHERE s.id = due.id
	RETURNING s.id`
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, now, limit, s.chains)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		// The rows stay locked to the commit, so each event reads its
		// session as expired and nothing changes it in between.
		for _, id := range ids {
			if _, err := RecordEvent(ctx, tx, Change{SessionID: id, At: now}); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expiring sessions: %w", err)
	}
	return n, nil
}

// UnmirroredReceivers returns up to limit receivers not yet copied to
// ClickHouse, oldest first.
func (s *Store) UnmirroredReceivers(ctx context.Context, limit int) ([]Receiver, error) {
	const q = `SELECT id, family, address, derivation_index, session_id, merchant_id, created_at
		FROM receivers WHERE mirrored_at IS NULL ORDER BY id LIMIT $1`
	rows, err := s.pool.Query(ctx, q, limit)
	if err != nil {
		return nil, fmt.Errorf("reading unmirrored receivers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Receiver, error) {
		var r Receiver
		var index int64
		err := row.Scan(&r.ID, &r.Family, &r.Address, &index, &r.SessionID, &r.MerchantID, &r.CreatedAt)
		r.Index = uint32(index)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading unmirrored receivers: %w", err)
	}
	return out, nil
}

// MarkMirrored records that receivers reached ClickHouse.
func (s *Store) MarkMirrored(ctx context.Context, ids []int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE receivers SET mirrored_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("marking receivers mirrored: %w", err)
	}
	return nil
}
