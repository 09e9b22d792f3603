package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// finalize re-checks a chain's pending deposits and payouts against the
// live blocks: one a reorg removed is un-applied; one whose block is at
// least FinalityDepth below the indexed head becomes final.
//
// It returns the final block number, with ok false while no block is final.
func (r *Reconciler) finalize(ctx context.Context, c *chain.Chain, seen uint64, opts ChainOptions) (final uint64, ok bool, err error) {
	switch {
	case opts.Finalized != nil:
		f, err := opts.Finalized(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("reading the finalized block: %w", err)
		}
		final, ok = min(f, seen), true
	case seen >= opts.FinalityDepth:
		final, ok = seen-opts.FinalityDepth, true
	}
	return final, ok, r.settleFinal(ctx, c, seen, final)
}

// settleFinal un-applies what a reorg removed and finalizes what is final
// (through block final) among the chain's pending deposits and payouts.
func (r *Reconciler) settleFinal(ctx context.Context, c *chain.Chain, seen, final uint64) error {
	type pending struct {
		id, payoutID  int64
		number        uint64
		hash, session string
		credited      bool
	}
	var list []pending
	rows, err := r.cfg.Postgres.Query(ctx, `SELECT id, block_number, block_hash, session_id, credited FROM deposits
		WHERE chain_id = $1 AND status = 'seen' AND block_number <= $2 ORDER BY id`, int64(c.ID), int64(seen))
	if err != nil {
		return fmt.Errorf("reading pending deposits: %w", err)
	}
	for rows.Next() {
		var p pending
		var n int64
		if err := rows.Scan(&p.id, &n, &p.hash, &p.session, &p.credited); err != nil {
			rows.Close()
			return fmt.Errorf("reading pending deposits: %w", err)
		}
		p.number = uint64(n)
		list = append(list, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// Payouts on this chain that the indexer saw but that are not yet
	// confirmed.
	prow, err := r.cfg.Postgres.Query(ctx, `SELECT id, seen_block_number, seen_block_hash, session_id FROM payouts
		WHERE chain_id = $1 AND status IN ('sent', 'mined') AND seen_block_number IS NOT NULL AND seen_block_number <= $2`, int64(c.ID), int64(seen))
	if err != nil {
		return fmt.Errorf("reading seen payouts: %w", err)
	}
	var payouts []pending
	for prow.Next() {
		var p pending
		var n int64
		if err := prow.Scan(&p.payoutID, &n, &p.hash, &p.session); err != nil {
			prow.Close()
			return fmt.Errorf("reading seen payouts: %w", err)
		}
		p.number = uint64(n)
		payouts = append(payouts, p)
	}
	prow.Close()
	if err := prow.Err(); err != nil {
		return err
	}
	if len(list) == 0 && len(payouts) == 0 {
		return nil
	}
	numbers := make([]uint64, 0, len(list)+len(payouts))
	for _, p := range append(list, payouts...) {
		numbers = append(numbers, p.number)
	}
	live, err := r.liveHashes(ctx, c.ID, numbers)
	if err != nil {
		return err
	}
	for _, p := range list {
		switch {
		case live[p.number] != p.hash:
			if err := r.unapply(ctx, c, p.id); err != nil {
				return err
			}
		case p.number <= final:
			if err := r.finalDeposit(ctx, p.id, p.session); err != nil {
				return err
			}
		}
	}
	for _, p := range payouts {
		switch {
		case live[p.number] != p.hash:
			// The block that carried our payout was replaced. Handing the
			// payout back to the executor ('sent') makes it follow the
			// transaction again: it records the receipt where the
			// transaction lands, or re-broadcasts the same signed bytes
			// (same nonce, so never a second payment) if it was dropped.
			if _, err := r.cfg.Postgres.Exec(ctx, `UPDATE payouts SET seen_tx_hash = NULL, seen_block_number = NULL, seen_block_hash = NULL,
				seen_block_time = NULL, received = NULL, status = CASE WHEN status = 'mined' THEN 'sent' ELSE status END
				WHERE id = $1 AND status <> 'confirmed'`, p.payoutID); err != nil {
				return fmt.Errorf("unseeing payout %d: %w", p.payoutID, err)
			}
		case p.number <= final:
			if err := r.confirmPayout(ctx, p.payoutID); err != nil {
				return err
			}
		}
	}
	return nil
}

// finalDeposit marks a deposit final and, if it counts, makes its session
// due for a decision, in one transaction that locks the session first (the
// lock order of every path that changes deposits).
func (r *Reconciler) finalDeposit(ctx context.Context, id int64, sessionID string) error {
	err := pgx.BeginFunc(ctx, r.cfg.Postgres, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, sessionID); err != nil {
			return err
		}
		var credited bool
		err := tx.QueryRow(ctx, `UPDATE deposits SET status = 'final', final_at = now() WHERE id = $1 AND status = 'seen' RETURNING credited`, id).Scan(&credited)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !credited {
			return nil
		}
		if err != nil {
			return err
		}
		return due(ctx, tx, sessionID)
	})
	if err != nil {
		return fmt.Errorf("finalizing deposit %d: %w", id, err)
	}
	return nil
}

func (r *Reconciler) liveHashes(ctx context.Context, chainID uint64, numbers []uint64) (map[uint64]string, error) {
	rows, err := r.cfg.ClickHouse.Query(ctx, `SELECT number, hash FROM blocks FINAL WHERE chain_id = ? AND deleted = 0 AND has(?, number)`, chainID, numbers)
	if err != nil {
		return nil, fmt.Errorf("reading live blocks: %w", err)
	}
	defer rows.Close()
	out := map[uint64]string{}
	for rows.Next() {
		var n uint64
		var h string
		if err := rows.Scan(&n, &h); err != nil {
			return nil, fmt.Errorf("reading live blocks: %w", err)
		}
		out[n] = h
	}
	return out, rows.Err()
}

// unapply marks a deposit a reorg removed as orphaned. If it was the
// session's only live credited deposit and nothing was paid yet, the session
// goes back to waiting for payment: it never succeeds on a removed deposit.
func (r *Reconciler) unapply(ctx context.Context, c *chain.Chain, id int64) error {
	var back bool
	var sessionID string
	err := pgx.BeginFunc(ctx, r.cfg.Postgres, func(tx pgx.Tx) error {
		var credited bool
		var applications int
		var d Transfer
		var amount string
		err := tx.QueryRow(ctx, `SELECT session_id, credited, applications, chain_id, block_number, block_hash, block_time, tx_hash, log_index, token, from_address, to_address, amount::text
			FROM deposits WHERE id = $1`, id).Scan(&sessionID, &credited, &applications, &d.ChainID, &d.BlockNumber, &d.BlockHash, &d.BlockTime, &d.TxHash, &d.LogIndex, &d.Token, &d.From, &d.To, &amount)
		if err != nil {
			return fmt.Errorf("reading deposit %d: %w", id, err)
		}
		d.Amount, _ = new(big.Int).SetString(amount, 10)
		s, err := lockSession(ctx, tx, sessionID)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE deposits SET status = 'orphaned', orphaned_at = now() WHERE id = $1 AND status = 'seen'`, id)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		tok, _ := c.Token(d.Token)
		entryID, err := recordLedgerID(ctx, tx, entry{
			EntryID: applicationID(fmt.Sprintf("unapply:%d:%s:%s:%d", d.ChainID, d.BlockHash, d.TxHash, d.LogIndex), applications), Kind: "unapply", Reason: unapplyReason(credited),
			SessionID: s.id, MerchantID: s.merchantID, ChainID: d.ChainID, Token: d.Token, Symbol: tok.Symbol, Decimals: tok.Decimals,
			From: d.From, To: d.To, TxHash: d.TxHash, LogIndex: d.LogIndex, BlockNumber: d.BlockNumber, Amount: d.Amount, EventTime: d.BlockTime,
		})
		if err != nil || !credited {
			return err
		}
		if err := due(ctx, tx, s.id); err != nil {
			return err
		}
		if s.status == session.Processing && !s.hasPayout {
			var others bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deposits WHERE session_id = $1 AND credited AND status <> 'orphaned')`, sessionID).Scan(&others); err != nil {
				return fmt.Errorf("checking other deposits: %w", err)
			}
			if !others {
				if _, err := tx.Exec(ctx, `UPDATE payment_methods SET source = NULL WHERE session_id = $1`, sessionID); err != nil {
					return fmt.Errorf("clearing source: %w", err)
				}
				if err := r.setStatus(ctx, tx, s, session.WaitingPayment); err != nil {
					return err
				}
				back = true
			}
		}
		// After the status change, so it shows the session as the reorg
		// left it. A replayed unapply (entry there already) has had its
		// event.
		if entryID != 0 {
			if _, err := store.RecordEvent(ctx, tx, store.Change{SessionID: s.id, Type: store.EventDepositReorged, LedgerEntryID: entryID, At: r.cfg.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unapplying deposit %d: %w", id, err)
	}
	r.metrics.unapplied.Inc()
	r.logger.WarnContext(ctx, "deposit removed by a reorg before it was final", "session_id", sessionID, "deposit_id", id, "session_back_to_waiting", back)
	return nil
}

// payoutSeen records that the indexer saw the treasury's transfer of a
// payout transaction (sent or mined). A fee bump may have been overtaken by
// an earlier signing of the same nonce, so earlier hashes count too.
func (r *Reconciler) payoutSeen(ctx context.Context, t *Transfer) error {
	const q = `UPDATE payouts SET seen_tx_hash = $1, seen_block_number = $2, seen_block_hash = $3, seen_block_time = $4,
		received = CASE WHEN seen_block_hash = $3 THEN received ELSE $5::numeric END
		WHERE (tx_hash = $1 OR $1 = ANY(prior_tx_hashes)) AND chain_id = $6 AND token = $7 AND status IN ('sent', 'mined')
		  AND (seen_block_hash IS DISTINCT FROM $3 OR received IS NULL)`
	_, err := r.cfg.Postgres.Exec(ctx, q, t.TxHash, int64(t.BlockNumber), t.BlockHash, t.BlockTime, t.Amount.String(), int64(t.ChainID), t.Token)
	if err != nil {
		return fmt.Errorf("recording payout transfer %s: %w", t.TxHash, err)
	}
	return nil
}

// confirmPayout ends a session once its payout's transfer is final:
// succeeded for a delivery, bounced for a refund, with the transaction and
// the amount that arrived.
func (r *Reconciler) confirmPayout(ctx context.Context, id int64) error {
	var kind, sessionID string
	var firstDeposit time.Time
	err := pgx.BeginFunc(ctx, r.cfg.Postgres, func(tx pgx.Tx) error {
		var p struct {
			chainID, block    int64
			token, to, txHash string
			received, from    string
			amount            string
			runner            *string
			exception         *string // the refunded exception's entry id
			blockTime         time.Time
		}
		err := tx.QueryRow(ctx, `SELECT kind, session_id, chain_id, token, to_address, seen_tx_hash, coalesce(from_address, ''), received::text, seen_block_number, seen_block_time,
			amount::text, runner_address, (SELECT entry_id FROM ledger_entries WHERE id = exception_id)
			FROM payouts WHERE id = $1 AND status IN ('sent', 'mined') FOR UPDATE`, id).
			Scan(&kind, &sessionID, &p.chainID, &p.token, &p.to, &p.txHash, &p.from, &p.received, &p.block, &p.blockTime, &p.amount, &p.runner, &p.exception)
		if err == pgx.ErrNoRows {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading payout %d: %w", id, err)
		}
		s, err := lockSession(ctx, tx, sessionID)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE payouts SET status = 'confirmed', confirmed_at = now(), receipt_final = true WHERE id = $1`, id); err != nil {
			return fmt.Errorf("confirming payout %d: %w", id, err)
		}
		c, ok := r.cfg.Chains.Chain(uint64(p.chainID))
		var tok chain.Token
		if ok {
			tok, _ = c.Token(p.token)
		}
		received, _ := new(big.Int).SetString(p.received, 10)
		if kind == "exception_refund" && p.exception != nil {
			// The refund of one exception (the exceptions inbox): money
			// out like a bounce's refund, one line per exception, named
			// after it (so statements can tell a held deposit's refund
			// from a refund of deposited money), and the session's status
			// is not this payout's business.
			return recordLedger(ctx, tx, entry{
				EntryID: "exception_refund:" + *p.exception, Kind: "refund", Reason: "exception_refund", SessionID: sessionID,
				MerchantID: s.merchantID, ChainID: uint64(p.chainID), Token: p.token, Symbol: tok.Symbol, Decimals: tok.Decimals, From: p.from,
				To: p.to, TxHash: p.txHash, BlockNumber: uint64(p.block), Amount: received, EventTime: p.blockTime,
			})
		}
		if err := recordLedger(ctx, tx, entry{
			EntryID: fmt.Sprintf("%s:%s", kind, sessionID), Kind: kind, SessionID: sessionID, MerchantID: s.merchantID,
			ChainID: uint64(p.chainID), Token: p.token, Symbol: tok.Symbol, Decimals: tok.Decimals, From: p.from, To: p.to,
			TxHash: p.txHash, BlockNumber: uint64(p.block), Amount: received, EventTime: p.blockTime,
		}); err != nil {
			return err
		}
		to := session.Succeeded
		if kind == "refund" {
			to = session.Bounced
		}
		// Unless already ended (a replayed confirmation). The delivery
		// first, so the status's event shows it.
		if s.status == session.Processing {
			if _, err := tx.Exec(ctx, `UPDATE sessions SET delivery_tx_hash = $2, delivery_received_units = $3 WHERE id = $1`,
				sessionID, p.txHash, chain.FormatUnits(received, tok.Decimals)); err != nil {
				return fmt.Errorf("recording delivery: %w", err)
			}
			if err := r.setStatus(ctx, tx, s, to); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT min(block_time) FROM deposits WHERE session_id = $1 AND credited AND status = 'final'`, sessionID).Scan(&firstDeposit); err != nil {
				firstDeposit = time.Time{}
			}
		}
		// A call that took part of the amount: the runner sent the rest
		// back to the treasury in the same transaction, where it is held
		// for the payer like an overpayment. Recorded after the status
		// change, so its deposit.exception shows the ended session.
		if amount, _ := new(big.Int).SetString(p.amount, 10); p.runner != nil && amount != nil && received != nil && received.Cmp(amount) < 0 {
			if err := recordLedger(ctx, tx, entry{
				EntryID: "call_returned:" + sessionID, Kind: "exception", Reason: ReasonCallReturned, SessionID: sessionID, MerchantID: s.merchantID,
				ChainID: uint64(p.chainID), Token: p.token, Symbol: tok.Symbol, Decimals: tok.Decimals, From: *p.runner, To: p.from,
				TxHash: p.txHash, BlockNumber: uint64(p.block), Amount: new(big.Int).Sub(amount, received), EventTime: p.blockTime,
			}); err != nil {
				return err
			}
			r.metrics.exceptions.WithLabelValues(ReasonCallReturned).Inc()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("confirming payout %d: %w", id, err)
	}
	if kind != "" {
		r.metrics.payoutConfirmed.WithLabelValues(kind).Inc()
		if kind == "delivery" && !firstDeposit.IsZero() {
			r.metrics.toSucceeded.Observe(r.cfg.Now().Sub(firstDeposit).Seconds())
		}
		r.logger.InfoContext(ctx, "payout final on chain", "session_id", sessionID, "kind", kind)
	}
	return nil
}

// unapplyReason tells a removed credited deposit from a removed exception,
// so statements subtract it from the right column.
func unapplyReason(credited bool) string {
	if credited {
		return "reorg"
	}
	return "reorg_exception"
}
