package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
)

// settleBatch bounds the sessions one Settle pass looks at.
const settleBatch = 200

// Settle schedules payouts: a delivery for each processing session whose
// credited deposits are all final and sufficient (or an open amount), a
// refund for each underpaid session past its deadline and for each delivery
// whose contract call reverted in a block that is final (a call re-mined
// after a reorg may succeed, and must not be refunded as well). Each
// session gets at most one delivery and one refund (a unique key),
// whatever replays or concurrent reconcilers do.
func (r *Reconciler) Settle(ctx context.Context) (bool, error) {
	const ready = `SELECT s.id FROM sessions s
		WHERE s.status = 'processing'
		  AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.session_id = s.id)
		  AND NOT EXISTS (SELECT 1 FROM deposits d WHERE d.session_id = s.id AND d.credited AND d.status = 'seen')
		  AND EXISTS (SELECT 1 FROM deposits d WHERE d.session_id = s.id AND d.credited AND d.status = 'final')
		ORDER BY s.updated_at LIMIT $1`
	ids, err := r.ids(ctx, ready, settleBatch)
	if err != nil {
		return false, err
	}
	for _, id := range ids {
		if err := r.decide(ctx, id); err != nil {
			return false, err
		}
	}
	const reverted = `SELECT p.session_id FROM payouts p
		WHERE p.kind = 'delivery' AND p.status = 'reverted' AND p.receipt_final
		  AND NOT EXISTS (SELECT 1 FROM payouts q WHERE q.session_id = p.session_id AND q.kind = 'refund')
		LIMIT $1`
	bounced, err := r.ids(ctx, reverted, settleBatch)
	if err != nil {
		return false, err
	}
	for _, id := range bounced {
		if err := r.inSession(ctx, id, func(tx pgx.Tx, s sessionRow, d *destination) error {
			r.logger.WarnContext(ctx, "delivery call reverted; refunding the deposit", "session_id", id)
			return r.scheduleRefund(ctx, tx, s, d)
		}); err != nil {
			return false, err
		}
	}
	return len(ids) == settleBatch || len(bounced) == settleBatch, nil
}

func (r *Reconciler) ids(ctx context.Context, q string, limit int) ([]string, error) {
	rows, err := r.cfg.Postgres.Query(ctx, q, limit)
	if err != nil {
		return nil, fmt.Errorf("finding sessions to settle: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// destination is what settling needs of a session, beyond its status.
type destination struct {
	typ, chainName, address, token string
	chainID                        uint64
	decimals                       uint8
	requested                      *big.Int
	calldata, refundAddress        string
	expiresAt                      time.Time
	deposits                       []finalDeposit
}

type finalDeposit struct {
	chainID     uint64
	token, from string
	amount      *big.Int
}

// inSession runs fn in a transaction holding the session's lock, with its
// destination and final credited deposits loaded.
func (r *Reconciler) inSession(ctx context.Context, id string, fn func(pgx.Tx, sessionRow, *destination) error) error {
	return pgx.BeginFunc(ctx, r.cfg.Postgres, func(tx pgx.Tx) error {
		s, err := lockSession(ctx, tx, id)
		if err != nil {
			return err
		}
		d := &destination{}
		var chainID *int64
		var decimals int16
		var requested, calldata, refund *string
		err = tx.QueryRow(ctx, `SELECT dest_type, dest_chain_id, dest_chain_name, dest_address, dest_token_address, dest_token_decimals,
			dest_amount_raw::text, dest_calldata, refund_address, expires_at FROM sessions WHERE id = $1`, id).
			Scan(&d.typ, &chainID, &d.chainName, &d.address, &d.token, &decimals, &requested, &calldata, &refund, &d.expiresAt)
		if err != nil {
			return fmt.Errorf("reading session %s: %w", id, err)
		}
		if chainID != nil {
			d.chainID = uint64(*chainID)
		}
		d.decimals = uint8(decimals)
		if requested != nil {
			d.requested, _ = new(big.Int).SetString(*requested, 10)
		}
		if calldata != nil {
			d.calldata = *calldata
		}
		if refund != nil {
			d.refundAddress = *refund
		}
		rows, err := tx.Query(ctx, `SELECT chain_id, token, from_address, amount::text FROM deposits
			WHERE session_id = $1 AND credited AND status = 'final' ORDER BY block_time, id`, id)
		if err != nil {
			return fmt.Errorf("reading deposits of %s: %w", id, err)
		}
		for rows.Next() {
			var fd finalDeposit
			var c int64
			var amount string
			if err := rows.Scan(&c, &fd.token, &fd.from, &amount); err != nil {
				rows.Close()
				return err
			}
			fd.chainID = uint64(c)
			fd.amount, _ = new(big.Int).SetString(amount, 10)
			d.deposits = append(d.deposits, fd)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return fn(tx, s, d)
	})
}

// decide applies the amount rules (Decide) to one session.
func (r *Reconciler) decide(ctx context.Context, id string) error {
	return r.inSession(ctx, id, func(tx pgx.Tx, s sessionRow, d *destination) error {
		if s.status != session.Processing || s.hasPayout || len(d.deposits) == 0 {
			return nil
		}
		total := new(big.Int)
		for _, fd := range d.deposits {
			c, ok := r.cfg.Chains.Chain(fd.chainID)
			if !ok {
				return fmt.Errorf("deposit on unconfigured chain %d", fd.chainID)
			}
			tok, _ := c.Token(fd.token)
			v, _ := Convert(fd.amount, tok.Decimals, d.decimals)
			total.Add(total, v)
		}
		decision, deliver, surplus := Decide(d.requested, total, r.cfg.Now(), d.expiresAt)
		switch decision {
		case Wait:
			return nil
		case Bounce:
			return r.scheduleRefund(ctx, tx, s, d)
		}
		if d.typ != "evm" {
			r.logger.WarnContext(ctx, "cannot deliver: destination type not supported yet; session stays processing", "session_id", id, "type", d.typ)
			return nil
		}
		if err := r.insertPayout(ctx, tx, id, "delivery", d.chainID, d.token, d.address, deliver, d.calldata); err != nil {
			return err
		}
		if surplus.Sign() > 0 {
			err := recordLedger(ctx, tx, entry{
				EntryID: "overpaid:" + id, Kind: "exception", Reason: ReasonOverpaid, SessionID: id, MerchantID: s.merchantID,
				ChainID: d.chainID, Token: strings.ToLower(d.token), Decimals: d.decimals, To: strings.ToLower(d.address),
				Amount: surplus, EventTime: r.cfg.Now(),
			})
			if err != nil {
				return err
			}
			r.metrics.exceptions.WithLabelValues(ReasonOverpaid).Inc()
		}
		return nil
	})
}

// scheduleRefund returns the session's final credited deposits to its
// refund address (or, without one, to the sender of the first deposit), on
// the chain and token they came in. Deposits in more than one token need a
// person: they are recorded as an exception and the session waits.
func (r *Reconciler) scheduleRefund(ctx context.Context, tx pgx.Tx, s sessionRow, d *destination) error {
	if len(d.deposits) == 0 {
		return nil
	}
	first := d.deposits[0]
	sum := new(big.Int)
	for _, fd := range d.deposits {
		if fd.chainID != first.chainID || fd.token != first.token {
			r.logger.WarnContext(ctx, "deposits in several tokens; refund needs manual action", "session_id", s.id)
			return recordLedger(ctx, tx, entry{EntryID: "manual_refund:" + s.id, Kind: "exception", Reason: ReasonManualRefund,
				SessionID: s.id, MerchantID: s.merchantID, ChainID: first.chainID, Token: first.token, Amount: new(big.Int), EventTime: r.cfg.Now()})
		}
		sum.Add(sum, fd.amount)
	}
	to := strings.ToLower(d.refundAddress)
	if to == "" {
		to = first.from
	}
	return r.insertPayout(ctx, tx, s.id, "refund", first.chainID, first.token, to, sum, "")
}

func (r *Reconciler) insertPayout(ctx context.Context, tx pgx.Tx, sessionID, kind string, chainID uint64, token, to string, amount *big.Int, calldata string) error {
	if amount.Sign() <= 0 {
		return errors.New("payout amount must be positive")
	}
	const q = `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, calldata)
		VALUES ($1, $2, $3, $4, $5, $6::numeric, NULLIF($7, '')) ON CONFLICT (session_id, kind) DO NOTHING`
	tag, err := tx.Exec(ctx, q, sessionID, kind, int64(chainID), strings.ToLower(token), strings.ToLower(to), amount.String(), calldata)
	if err != nil {
		return fmt.Errorf("scheduling %s for %s: %w", kind, sessionID, err)
	}
	if tag.RowsAffected() > 0 {
		r.metrics.payoutsCreated.WithLabelValues(kind).Inc()
		r.logger.InfoContext(ctx, "payout scheduled", "session_id", sessionID, "kind", kind, "chain_id", chainID, "amount", amount.String())
	}
	return nil
}
