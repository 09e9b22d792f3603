package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
)

// CreateSession inserts a new session (and its session.created event).
func (s *Store) CreateSession(ctx context.Context, ss *session.Session, decimals uint8) error {
	if ss.Payment != nil {
		return errors.New("store: a payment's session is created with CreatePayment")
	}
	if _, err := s.insertSession(ctx, ss, decimals); err != nil {
		return fmt.Errorf("inserting session: %w", err)
	}
	return nil
}

// CreatePayment inserts the session of a new payment, unless the merchant
// already has a payment with its externalId: then it returns that one
// (created false) and inserts nothing. The unique index on
// (merchant_id, external_id) decides between concurrent creates: the
// losers' inserts wait for the winner's commit and then do nothing.
func (s *Store) CreatePayment(ctx context.Context, ss *session.Session, decimals uint8) (out *session.Session, created bool, err error) {
	if ss.Payment == nil {
		return nil, false, errors.New("store: CreatePayment needs a session with a Payment")
	}
	inserted, err := s.insertSession(ctx, ss, decimals)
	if err != nil {
		return nil, false, fmt.Errorf("inserting payment: %w", err)
	}
	if inserted {
		out, err = s.GetSession(ctx, ss.ID)
		return out, true, err
	}
	out, err = s.GetPaymentByExternalID(ctx, ss.MerchantID, ss.Payment.ExternalID)
	if errors.Is(err, ErrNotFound) {
		// The conflicting row exists but cannot be read: it was deleted
		// in between, which nothing does.
		return nil, false, fmt.Errorf("payment with externalId %q conflicted but is not there", ss.Payment.ExternalID)
	}
	return out, false, err
}

// GetPayment returns the session of a payment by the payment's public id.
func (s *Store) GetPayment(ctx context.Context, paymentID string) (*session.Session, error) {
	return getSessionWhere(ctx, s.db(ctx), "s.payment_id = $1", s.chains, paymentID)
}

// GetPaymentByExternalID returns a merchant's payment by its externalId.
func (s *Store) GetPaymentByExternalID(ctx context.Context, merchantID, externalID string) (*session.Session, error) {
	return getSessionWhere(ctx, s.db(ctx), "s.merchant_id = $1 AND s.external_id = $3", s.chains, merchantID, externalID)
}

// insertSession inserts ss and its event (session.created; none for a
// payment) in one transaction, and reports whether it did: false only
// when a payment with the same externalId exists.
func (s *Store) insertSession(ctx context.Context, ss *session.Session, decimals uint8) (bool, error) {
	display, err := json.Marshal(ss.Display)
	if err != nil {
		return false, fmt.Errorf("encoding display: %w", err)
	}
	var metadata []byte
	if ss.Metadata != nil {
		if metadata, err = json.Marshal(ss.Metadata); err != nil {
			return false, fmt.Errorf("encoding metadata: %w", err)
		}
	}
	d := ss.Destination
	var amountRaw *string
	if d.AmountRaw != nil {
		v := d.AmountRaw.String()
		amountRaw = &v
	}
	var paymentID, externalID *string
	var checkout []byte
	if p := ss.Payment; p != nil {
		paymentID, externalID = &p.ID, nullString(p.ExternalID)
		if checkout, err = json.Marshal(p.Checkout); err != nil {
			return false, fmt.Errorf("encoding checkout: %w", err)
		}
	}
	const q = `INSERT INTO sessions (
			id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
			dest_token_address, dest_token_symbol, dest_token_decimals, dest_amount_units,
			dest_amount_raw, dest_calldata, display, metadata, refund_address, client_secret,
			created_at, expires_at, payment_id, external_id, checkout
		) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::numeric, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
		ON CONFLICT (merchant_id, external_id) DO NOTHING`
	var inserted bool
	// The session and its event commit together (a savepoint when the
	// request's Idempotency-Key transaction is in ctx).
	err = pgx.BeginFunc(ctx, s.db(ctx), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, q,
			ss.ID, ss.MerchantID, string(ss.Status), d.Type, d.Address, nullUint(d.ChainID), d.ChainName,
			d.TokenAddress, d.TokenSymbol, int16(decimals), nullString(d.AmountUnits),
			amountRaw, nullString(d.Calldata), display, metadata, nullString(ss.RefundAddress), ss.ClientSecret,
			ss.CreatedAt, ss.ExpiresAt, paymentID, externalID, checkout)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		inserted = true
		_, err = RecordEvent(ctx, tx, Change{SessionID: ss.ID, At: ss.CreatedAt})
		return err
	})
	return inserted, err
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullUint(v uint64) *int64 {
	if v == 0 {
		return nil
	}
	i := int64(v)
	return &i
}

// attributedThrough is the block time through which the reconciler of
// every expected chain (the array parameter p) has attributed final
// blocks: blocks no reorg can replace, so no deposit mined before it can
// still appear. The epoch while any expected chain has attributed none
// (so nothing reads as known), and NULL when no chain is expected at all
// (nothing can be paid into a receiver: the deadline alone decides). Each
// reconciler records it only after the deposits of those blocks
// committed, so a snapshot that sees it also sees the deposits.
func attributedThrough(p string) string {
	return `(SELECT CASE WHEN cardinality(` + p + `::bigint[]) = 0 THEN NULL
		WHEN count(final_block_time) < cardinality(` + p + `::bigint[]) THEN 'epoch'::timestamptz
		ELSE min(final_block_time) END
		FROM reconciler_cursors WHERE chain_id = ANY(` + p + `::bigint[]))`
}

var selectSession = `SELECT s.id, s.merchant_id, s.status, s.dest_type, s.dest_address,
	s.dest_chain_id, s.dest_chain_name, s.dest_token_address, s.dest_token_symbol,
	s.dest_amount_units, s.dest_amount_raw::text, s.dest_calldata, s.delivery_tx_hash,
	s.delivery_received_units, s.display, s.metadata, s.refund_address, s.client_secret,
	s.created_at, s.expires_at,
	pm.type, pm.fiat_method, pm.created_at, pm.source, r.address,
	` + attributedThrough("$2") + `,
	s.payment_id, s.external_id, s.checkout
FROM sessions s
LEFT JOIN LATERAL (
	SELECT * FROM payment_methods WHERE session_id = s.id ORDER BY id DESC LIMIT 1
) pm ON true
LEFT JOIN receivers r ON r.id = pm.receiver_id
WHERE `

// GetSession returns a session with its latest payment method.
func (s *Store) GetSession(ctx context.Context, id string) (*session.Session, error) {
	return getSession(ctx, s.db(ctx), id, s.chains)
}

func getSession(ctx context.Context, q querier, id string, chains []int64) (*session.Session, error) {
	return getSessionWhere(ctx, q, "s.id = $1", chains, id)
}

// getSessionWhere reads the one session matching where, whose parameters
// are $1 and $3 ($2 is the chains of attributedThrough).
func getSessionWhere(ctx context.Context, q querier, where string, chains []int64, key string, more ...string) (*session.Session, error) {
	var (
		ss                                       session.Session
		status                                   string
		chainID                                  *int64
		amountUnits, amountRaw, calldata, refund *string
		deliveryTx, deliveryUnits                *string
		display, metadata, source                []byte
		pmType, pmFiat, pmReceiver               *string
		pmCreated, attributed                    *time.Time
		paymentID, externalID                    *string
		checkout                                 []byte
		d                                        = &ss.Destination
	)
	args := []any{key, chains}
	for _, m := range more {
		args = append(args, m)
	}
	id := key
	err := q.QueryRow(ctx, selectSession+where, args...).Scan(
		&ss.ID, &ss.MerchantID, &status, &d.Type, &d.Address,
		&chainID, &d.ChainName, &d.TokenAddress, &d.TokenSymbol,
		&amountUnits, &amountRaw, &calldata, &deliveryTx,
		&deliveryUnits, &display, &metadata, &refund, &ss.ClientSecret,
		&ss.CreatedAt, &ss.ExpiresAt,
		&pmType, &pmFiat, &pmCreated, &source, &pmReceiver, &attributed,
		&paymentID, &externalID, &checkout)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading session %s: %w", id, err)
	}
	id = ss.ID
	ss.Status = session.Status(status)
	if paymentID != nil {
		ss.Payment = &session.Payment{ID: *paymentID, ExternalID: deref(externalID)}
		if checkout != nil {
			if err := json.Unmarshal(checkout, &ss.Payment.Checkout); err != nil {
				return nil, fmt.Errorf("session %s: decoding checkout: %w", id, err)
			}
		}
	}
	if attributed != nil {
		ss.AttributedThrough = *attributed
	}
	if chainID != nil {
		d.ChainID = uint64(*chainID)
	}
	d.AmountUnits = deref(amountUnits)
	if amountRaw != nil {
		v, ok := new(big.Int).SetString(*amountRaw, 10)
		if !ok {
			return nil, fmt.Errorf("session %s: stored amount %q is not an integer", id, *amountRaw)
		}
		d.AmountRaw = v
	}
	d.Calldata = deref(calldata)
	if deliveryTx != nil {
		d.Delivery = &session.Delivery{TxHash: *deliveryTx, ReceivedUnits: deref(deliveryUnits)}
	}
	if err := json.Unmarshal(display, &ss.Display); err != nil {
		return nil, fmt.Errorf("session %s: decoding display: %w", id, err)
	}
	if metadata != nil {
		if err := json.Unmarshal(metadata, &ss.Metadata); err != nil {
			return nil, fmt.Errorf("session %s: decoding metadata: %w", id, err)
		}
	}
	ss.RefundAddress = deref(refund)
	if pmType != nil {
		pm := &session.PaymentMethod{Type: *pmType, FiatMethod: deref(pmFiat), ReceiverAddress: deref(pmReceiver)}
		if pmCreated != nil {
			pm.CreatedAt = *pmCreated
		}
		if source != nil {
			pm.Source = new(session.Source)
			if err := json.Unmarshal(source, pm.Source); err != nil {
				return nil, fmt.Errorf("session %s: decoding source: %w", id, err)
			}
		}
		ss.PaymentMethod = pm
	}
	return &ss, nil
}

// querier is what both a pool and a transaction offer.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
