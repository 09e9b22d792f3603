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

// settleBatch bounds the sessions one query of a Settle pass takes, and
// settleBatches the queries per pass.
const (
	settleBatch   = 200
	settleBatches = 10
)

// How long a session Settle could not act on waits before it is decided
// again, unless something it depends on changes first (a deposit becoming
// final, applied or removed makes it due at once).
const (
	// unattributedRecheck: past the deadline on the clock, but some
	// chain's final blocks are not attributed through it yet.
	unattributedRecheck = 5 * time.Second
	// errorRecheck: deciding failed (a deposit on a chain no longer
	// configured, a database error).
	errorRecheck = time.Minute
)

// Settle schedules payouts: a delivery for each processing session whose
// credited deposits are all final and sufficient (or an open amount), a
// refund for each underpaid session whose deadline has passed (on the
// clock and in every chain's attributed final blocks) and for each
// delivery whose contract call reverted in a block that is final (a call
// re-mined after a reorg may succeed, and must not be refunded as well).
// Each session gets at most one delivery and one refund (a unique key),
// whatever replays or concurrent reconcilers do.
//
// Its queue is ordered by when a session next needs a decision
// (sessions.settle_check_at), not by when it last changed: a decision that
// cannot act parks the session until its deadline, briefly while
// attribution catches up, or until a person acts (a refund in several
// tokens), so no number of such sessions delays another one. A session
// whose decision fails is logged, parked for errorRecheck, and the pass
// goes on.
func (r *Reconciler) Settle(ctx context.Context) (bool, error) {
	attributed, err := r.attributedThrough(ctx)
	if err != nil {
		return false, err
	}
	const ready = `SELECT s.id FROM sessions s
		WHERE s.status = 'processing' AND s.settle_check_at <= $2
		  AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.session_id = s.id AND p.kind IN ('delivery', 'refund'))
		  AND NOT EXISTS (SELECT 1 FROM deposits d WHERE d.session_id = s.id AND d.credited AND d.status = 'seen')
		  AND EXISTS (SELECT 1 FROM deposits d WHERE d.session_id = s.id AND d.credited AND d.status = 'final')
		ORDER BY s.settle_check_at, s.id LIMIT $1`
	more := false
	for range settleBatches {
		now := r.cfg.Now()
		ids, err := r.ids(ctx, ready, settleBatch, now)
		if err != nil {
			return false, err
		}
		for _, id := range ids {
			if err := r.decide(ctx, id, attributed); err != nil {
				if ctx.Err() != nil {
					return false, ctx.Err()
				}
				r.decideFailed(ctx, id, now, err)
			}
		}
		if more = len(ids) == settleBatch; !more {
			break
		}
	}
	// Bounced deliveries, oldest first; a session parked by its refund (in
	// several tokens: a person decides) is not retried each pass.
	const reverted = `SELECT p.session_id FROM payouts p JOIN sessions s ON s.id = p.session_id
		WHERE p.kind = 'delivery' AND p.status = 'reverted' AND p.receipt_final AND s.settle_check_at <= $2
		  AND NOT EXISTS (SELECT 1 FROM payouts q WHERE q.session_id = p.session_id AND q.kind = 'refund')
		ORDER BY p.id LIMIT $1`
	now := r.cfg.Now()
	bounced, err := r.ids(ctx, reverted, settleBatch, now)
	if err != nil {
		return false, err
	}
	for _, id := range bounced {
		if err := r.inSession(ctx, id, func(tx pgx.Tx, s sessionRow, d *destination) error {
			r.logger.WarnContext(ctx, "delivery call reverted; refunding the deposit", "session_id", id)
			return r.scheduleRefund(ctx, tx, s, d)
		}); err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			r.decideFailed(ctx, id, now, err)
		}
	}
	return more || len(bounced) == settleBatch, nil
}

// decideFailed logs a failed decision and parks the session for
// errorRecheck, so it cannot hold the head of the queue.
func (r *Reconciler) decideFailed(ctx context.Context, id string, now time.Time, err error) {
	r.logger.ErrorContext(ctx, "settling session failed; retrying later", "session_id", id, "err", err, "retry_in", errorRecheck)
	r.metrics.settleParked.WithLabelValues("error").Inc()
	if _, perr := r.cfg.Postgres.Exec(ctx, `UPDATE sessions SET settle_check_at = $2, settle_wait = $3 WHERE id = $1`,
		id, now.Add(errorRecheck), "error: "+err.Error()); perr != nil {
		r.logger.ErrorContext(ctx, "parking session after a failed decision failed", "session_id", id, "err", perr)
	}
}

// park leaves a locked session out of Settle's queue until `until`
// (infinity: until something it depends on changes), saying why.
func (r *Reconciler) park(ctx context.Context, tx pgx.Tx, id string, until time.Time, infinite bool, wait string) error {
	r.metrics.settleParked.WithLabelValues(wait).Inc()
	var at any = until
	if infinite {
		at = "infinity"
	}
	if _, err := tx.Exec(ctx, `UPDATE sessions SET settle_check_at = $2::timestamptz, settle_wait = $3 WHERE id = $1`, id, at, wait); err != nil {
		return fmt.Errorf("parking session %s: %w", id, err)
	}
	return nil
}

// attributedThrough is the block time through which every indexed chain's
// reconciler has attributed final blocks: the earliest of them, or the
// zero time while any has attributed none (a chain that has not started
// yet may still hold a deposit made in time). The rule is the one readers
// and the expiry loop apply (store.ExpectChains).
func (r *Reconciler) attributedThrough(ctx context.Context) (time.Time, error) {
	chains := r.cfg.Chains.Indexed()
	if len(chains) == 0 {
		// Nothing is indexed, so nothing more can arrive: the clock
		// decides, as for expiry.
		return r.cfg.Now(), nil
	}
	ids := make([]int64, len(chains))
	for i, c := range chains {
		ids[i] = int64(c)
	}
	var n int
	var t *time.Time
	err := r.cfg.Postgres.QueryRow(ctx, `SELECT count(final_block_time), min(final_block_time) FROM reconciler_cursors WHERE chain_id = ANY($1)`, ids).Scan(&n, &t)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading attributed final block times: %w", err)
	}
	if n < len(ids) || t == nil {
		return time.Time{}, nil
	}
	return *t, nil
}

func (r *Reconciler) ids(ctx context.Context, q string, limit int, now time.Time) ([]string, error) {
	rows, err := r.cfg.Postgres.Query(ctx, q, limit, now)
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
	// pending: a credited deposit is not final yet.
	pending bool
}

type finalDeposit struct {
	id          int64
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
		rows, err := tx.Query(ctx, `SELECT id, chain_id, token, from_address, amount::text FROM deposits
			WHERE session_id = $1 AND credited AND status = 'final' ORDER BY block_time, id`, id)
		if err != nil {
			return fmt.Errorf("reading deposits of %s: %w", id, err)
		}
		for rows.Next() {
			var fd finalDeposit
			var c int64
			var amount string
			if err := rows.Scan(&fd.id, &c, &fd.token, &fd.from, &amount); err != nil {
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
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deposits WHERE session_id = $1 AND credited AND status = 'seen')`, id).Scan(&d.pending); err != nil {
			return fmt.Errorf("reading pending deposits of %s: %w", id, err)
		}
		return fn(tx, s, d)
	})
}

// decide applies the amount rules (Decide) to one session. Everything it
// depends on is read under the session's lock: the deposits, and whether a
// credited deposit arrived that is not final yet (then it waits: the
// deposit's finality makes the session due again).
func (r *Reconciler) decide(ctx context.Context, id string, attributed time.Time) error {
	return r.inSession(ctx, id, func(tx pgx.Tx, s sessionRow, d *destination) error {
		if s.status != session.Processing || s.hasPayout || len(d.deposits) == 0 || d.pending {
			return nil
		}
		now := r.cfg.Now()
		total := new(big.Int)
		var dust []entry
		for _, fd := range d.deposits {
			c, ok := r.cfg.Chains.Chain(fd.chainID)
			if !ok {
				return fmt.Errorf("deposit on unconfigured chain %d", fd.chainID)
			}
			tok, _ := c.Token(fd.token)
			v, rest := Convert(fd.amount, tok.Decimals, d.decimals)
			total.Add(total, v)
			if rest.Sign() > 0 {
				dust = append(dust, entry{EntryID: fmt.Sprintf("%s:%s:%d", ReasonConversionDust, id, fd.id), Kind: "exception", Reason: ReasonConversionDust,
					SessionID: id, MerchantID: s.merchantID, ChainID: fd.chainID, Token: fd.token, Symbol: tok.Symbol, Decimals: tok.Decimals,
					From: fd.from, Amount: rest, EventTime: now})
			}
		}
		decision, deliver, surplus := Decide(d.requested, total, now, d.expiresAt, attributed)
		switch decision {
		case Wait:
			if now.Before(d.expiresAt) {
				return r.park(ctx, tx, id, d.expiresAt, false, "underpaid")
			}
			return r.park(ctx, tx, id, now.Add(unattributedRecheck), false, "unattributed")
		case Bounce:
			return r.scheduleRefund(ctx, tx, s, d)
		}
		if d.typ != "evm" {
			r.logger.WarnContext(ctx, "cannot deliver: destination type not supported yet; session stays processing", "session_id", id, "type", d.typ)
			return r.park(ctx, tx, id, time.Time{}, true, "unsupported")
		}
		if err := r.insertPayout(ctx, tx, id, "delivery", d.chainID, d.token, d.address, deliver, d.calldata); err != nil {
			return err
		}
		// What truncation left of each deposit stays in the treasury
		// (a refund, by contrast, returns deposits whole).
		for _, e := range dust {
			if err := recordLedger(ctx, tx, e); err != nil {
				return err
			}
			r.metrics.exceptions.WithLabelValues(ReasonConversionDust).Inc()
		}
		if surplus.Sign() > 0 {
			err := recordLedger(ctx, tx, entry{
				EntryID: "overpaid:" + id, Kind: "exception", Reason: ReasonOverpaid, SessionID: id, MerchantID: s.merchantID,
				ChainID: d.chainID, Token: strings.ToLower(d.token), Decimals: d.decimals, To: strings.ToLower(d.address),
				Amount: surplus, EventTime: now,
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
			if err := recordLedger(ctx, tx, entry{EntryID: "manual_refund:" + s.id, Kind: "exception", Reason: ReasonManualRefund,
				SessionID: s.id, MerchantID: s.merchantID, ChainID: first.chainID, Token: first.token, Amount: new(big.Int), EventTime: r.cfg.Now()}); err != nil {
				return err
			}
			return r.park(ctx, tx, s.id, time.Time{}, true, ReasonManualRefund)
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
		VALUES ($1, $2, $3, $4, $5, $6::numeric, NULLIF($7, '')) ON CONFLICT (session_id, kind) WHERE kind IN ('delivery', 'refund') DO NOTHING`
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
