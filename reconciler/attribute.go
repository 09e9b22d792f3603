package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// Transfer is one indexed token transfer, as the reconciler reads it.
type Transfer struct {
	ChainID     uint64
	BlockNumber uint64
	BlockHash   string
	BlockTime   time.Time
	TxHash      string
	LogIndex    uint32
	Token       string
	From, To    string
	Amount      *big.Int
}

// Exception reasons: why a transfer to one of our receivers is not credited.
const (
	ReasonWrongToken     = "wrong_token"            // not an allowlisted token of that chain
	ReasonLate           = "late"                   // mined after the session's deadline
	ReasonFinished       = "after_session_finished" // the session already settled or is settling
	ReasonOverpaid       = "overpaid"               // surplus beyond the requested amount (held)
	ReasonManualRefund   = "manual_refund"          // deposits in several tokens: refund needs a person
	ReasonCallReturned   = "call_returned"          // the merchant's call took less than the payout; the rest is back in the treasury (held)
	ReasonConversionDust = "conversion_dust"        // below one unit of the destination token after conversion (held)
)

type cursor struct {
	number uint64
	hash   string
	ok     bool
	// final is the final attributed block recorded (nil: none yet).
	final *int64
}

// StepChain attributes the transfers of one batch of newly indexed blocks
// of a chain, then re-checks pending deposits and payouts there. It reports
// whether more indexed blocks are waiting.
//
// Cost is proportional to the new transfers: the range is read from
// ClickHouse by primary key, and their recipients are looked up among the
// receivers in Postgres in one query.
func (r *Reconciler) StepChain(ctx context.Context, c *chain.Chain) (bool, error) {
	opts := r.options(c.ID)
	seen, ok, err := r.indexedHead(ctx, c.ID)
	if err != nil || !ok {
		return false, err
	}
	cur, err := r.reconcilerCursor(ctx, c.ID)
	if err != nil {
		return false, err
	}
	if !cur.ok {
		cur = cursor{number: opts.StartBlock - 1}
		if opts.StartBlock == 0 {
			cur.number = ^uint64(0) // "before block 0": the first range starts at 0
		}
	}
	// The block at the cursor may have been replaced by a reorg since:
	// step back and read again (attribution is idempotent).
	// A cursor without a hash (stored by older versions when the block
	// was missing mid-rewind) counts as replaced.
	if cur.ok {
		live, _, err := r.liveBlock(ctx, c.ID, cur.number)
		if err != nil {
			return false, err
		}
		if live != cur.hash || live == "" {
			back := min(cur.number+1, opts.MaxReorgDepth)
			r.logger.WarnContext(ctx, "block at reconciler cursor was replaced; re-reading", "chain", c.Name, "number", cur.number, "back", back)
			cur = cursor{number: cur.number - back, ok: true}
		}
	}
	from := cur.number + 1
	more := false
	if from <= seen {
		to := min(seen, from+r.cfg.BatchBlocks-1)
		more = to < seen
		// The range is read between two reads of its last block: if the
		// indexer replaced it meanwhile (a rewind replaces every block
		// from the fork point up), what was read may be the old fork, and
		// the cursor must not move onto the new one unread. Nothing is
		// lost by retrying: attribution is idempotent, and what the old
		// fork applied is un-applied by finalize.
		before, _, err := r.liveBlock(ctx, c.ID, to)
		if err != nil {
			return false, err
		}
		if before == "" {
			// An indexer mid-rewind, or (if it lasts) a start_block below
			// the first block the indexer wrote.
			r.logger.WarnContext(ctx, "indexed block missing; not attributing past it until it is there", "chain", c.Name, "number", to)
			return false, nil
		}
		if err := r.attributeRange(ctx, c, from, to); err != nil {
			return false, err
		}
		if r.afterRead != nil {
			r.afterRead()
		}
		hash, t, err := r.liveBlock(ctx, c.ID, to)
		if err != nil {
			return false, err
		}
		if hash != before {
			r.logger.WarnContext(ctx, "indexer replaced blocks while the reconciler read them; reading again", "chain", c.Name, "number", to)
			return true, nil
		}
		const q = `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time) VALUES ($1, $2, $3, $4)
			ON CONFLICT (chain_id) DO UPDATE SET number = excluded.number, hash = excluded.hash, block_time = excluded.block_time, updated_at = now()`
		if _, err := r.cfg.Postgres.Exec(ctx, q, int64(c.ID), int64(to), hash, t); err != nil {
			return false, fmt.Errorf("moving reconciler cursor: %w", err)
		}
		cur = cursor{number: to, ok: true}
	}
	r.metrics.lagBlocks.WithLabelValues(c.Name).Set(float64(seen - min(seen, cur.number)))
	final, ok, err := r.finalize(ctx, c, seen, opts)
	if err != nil {
		return false, err
	}
	if ok && cur.ok && cur.number != ^uint64(0) {
		if err := r.recordFinal(ctx, c.ID, min(final, cur.number), cur.final); err != nil {
			return false, err
		}
	}
	return more, nil
}

// recordFinal stores the newest block that is both final and attributed,
// with its time: what Settle and expiry may treat as known for good.
// stored is the number recorded before (nil: none).
func (r *Reconciler) recordFinal(ctx context.Context, chainID, through uint64, stored *int64) error {
	if stored != nil && uint64(*stored) == through {
		return nil
	}
	hash, t, err := r.liveBlock(ctx, chainID, through)
	if err != nil || hash == "" {
		return err // not indexed (below the start block): nothing known yet
	}
	if _, err := r.cfg.Postgres.Exec(ctx, `UPDATE reconciler_cursors SET final_number = $2, final_block_time = $3 WHERE chain_id = $1`,
		int64(chainID), int64(through), t); err != nil {
		return fmt.Errorf("recording final attributed block: %w", err)
	}
	return nil
}

func (r *Reconciler) indexedHead(ctx context.Context, chainID uint64) (uint64, bool, error) {
	var n int64
	err := r.cfg.Postgres.QueryRow(ctx, `SELECT number FROM indexer_cursors WHERE chain_id = $1`, int64(chainID)).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading indexer cursor: %w", err)
	}
	return uint64(n), true, nil
}

func (r *Reconciler) reconcilerCursor(ctx context.Context, chainID uint64) (cursor, error) {
	var c cursor
	var n int64
	err := r.cfg.Postgres.QueryRow(ctx, `SELECT number, hash, final_number FROM reconciler_cursors WHERE chain_id = $1`, int64(chainID)).Scan(&n, &c.hash, &c.final)
	if errors.Is(err, pgx.ErrNoRows) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("reading reconciler cursor: %w", err)
	}
	c.number, c.ok = uint64(n), true
	return c, nil
}

// liveBlock returns the hash and time of the indexed, not orphaned block at
// a height ("" if there is none).
func (r *Reconciler) liveBlock(ctx context.Context, chainID, number uint64) (string, time.Time, error) {
	rows, err := r.cfg.ClickHouse.Query(ctx, `SELECT hash, time FROM blocks FINAL WHERE chain_id = ? AND number = ? AND deleted = 0`, chainID, number)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("reading block %d: %w", number, err)
	}
	defer rows.Close()
	var hash string
	var t time.Time
	if rows.Next() {
		if err := rows.Scan(&hash, &t); err != nil {
			return "", time.Time{}, fmt.Errorf("reading block %d: %w", number, err)
		}
	}
	return hash, t, rows.Err()
}

// attributeRange reads the live transfers of from..to and applies those that
// concern us: deposits to our receivers and the treasury's payouts.
func (r *Reconciler) attributeRange(ctx context.Context, c *chain.Chain, from, to uint64) error {
	const q = `SELECT block_number, block_hash, block_time, tx_hash, log_index, token, from_address, to_address, amount_raw
		FROM transfers FINAL
		WHERE chain_id = ? AND block_number BETWEEN ? AND ? AND deleted = 0`
	rows, err := r.cfg.ClickHouse.Query(ctx, q, c.ID, from, to)
	if err != nil {
		return fmt.Errorf("reading transfers %d-%d: %w", from, to, err)
	}
	var all []Transfer
	recipients, senders := map[string]bool{}, map[string]bool{}
	for rows.Next() {
		t := Transfer{ChainID: c.ID}
		var amount string
		if err := rows.Scan(&t.BlockNumber, &t.BlockHash, &t.BlockTime, &t.TxHash, &t.LogIndex, &t.Token, &t.From, &t.To, &amount); err != nil {
			rows.Close()
			return fmt.Errorf("reading transfers: %w", err)
		}
		t.Amount, _ = new(big.Int).SetString(amount, 10)
		if t.Amount == nil {
			rows.Close()
			return fmt.Errorf("transfer %s/%d has amount %q", t.TxHash, t.LogIndex, amount)
		}
		all = append(all, t)
		recipients[t.To] = true
		senders[t.From] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading transfers: %w", err)
	}
	if len(all) == 0 {
		return nil
	}
	ours, err := r.receivers(ctx, recipients)
	if err != nil {
		return err
	}
	runners, err := r.runners(ctx, senders)
	if err != nil {
		return err
	}
	for i := range all {
		t := &all[i]
		if rc, ok := ours[t.To]; ok {
			if err := r.ApplyDeposit(ctx, c, t, rc); err != nil {
				return err
			}
		}
		if r.cfg.Treasury != "" && t.From == r.cfg.Treasury {
			if err := r.payoutSeen(ctx, t); err != nil {
				return err
			}
		}
	}
	return r.runnersSeen(ctx, all, runners)
}

// runner is a call payout as its runner's transfers identify it.
type runner struct {
	id    int64
	token string
}

// runners returns the call payouts whose runner address is among addrs,
// by address: their deliveries are transfers from the runner, not from
// the treasury.
func (r *Reconciler) runners(ctx context.Context, addrs map[string]bool) (map[string]runner, error) {
	list := make([]string, 0, len(addrs))
	for a := range addrs {
		list = append(list, a)
	}
	rows, err := r.cfg.Postgres.Query(ctx, `SELECT runner_address, id, token FROM payouts WHERE runner_address = ANY($1)`, list)
	if err != nil {
		return nil, fmt.Errorf("matching payout runners: %w", err)
	}
	defer rows.Close()
	out := map[string]runner{}
	for rows.Next() {
		var a string
		var rn runner
		if err := rows.Scan(&a, &rn.id, &rn.token); err != nil {
			return nil, fmt.Errorf("matching payout runners: %w", err)
		}
		out[a] = rn
	}
	return out, rows.Err()
}

// runnersSeen records what each call payout's execute delivered: the sum
// of its runner's transfers to anyone but the treasury in that
// transaction (what goes to the treasury is what the call did not take).
// A transaction lies in one block and ranges hold whole blocks, so the sum
// is complete, and a replay computes the same one. An execute that
// delivered nothing is a returned payout, which the executor marks
// reverted; it is never seen as a delivery. Only the payout's token
// counts: the merchant's call can make any contract log a "Transfer" from
// the runner.
func (r *Reconciler) runnersSeen(ctx context.Context, all []Transfer, runners map[string]runner) error {
	if len(runners) == 0 {
		return nil
	}
	type key struct {
		id        int64
		tx, block string
	}
	sums := map[key]*big.Int{}
	first := map[key]*Transfer{}
	var order []key
	for i := range all {
		t := &all[i]
		rn, ok := runners[t.From]
		if !ok || t.To == r.cfg.Treasury || t.Token != rn.token {
			continue
		}
		k := key{rn.id, t.TxHash, t.BlockHash}
		if sums[k] == nil {
			sums[k], first[k] = new(big.Int), t
			order = append(order, k)
		}
		sums[k].Add(sums[k], t.Amount)
	}
	for _, k := range order {
		t := first[k]
		const q = `UPDATE payouts SET seen_tx_hash = $1, seen_block_number = $2, seen_block_hash = $3, seen_block_time = $4,
			received = CASE WHEN seen_block_hash = $3 THEN received ELSE $5::numeric END
			WHERE id = $6 AND (tx_hash = $1 OR $1 = ANY(prior_tx_hashes)) AND status IN ('sent', 'mined')
			  AND (seen_block_hash IS DISTINCT FROM $3 OR received IS NULL)`
		if _, err := r.cfg.Postgres.Exec(ctx, q, t.TxHash, int64(t.BlockNumber), t.BlockHash, t.BlockTime, sums[k].String(), k.id); err != nil {
			return fmt.Errorf("recording execute %s of payout %d: %w", t.TxHash, k.id, err)
		}
	}
	return nil
}

// Receiver is the receiver row a transfer paid into.
type Receiver struct {
	ID        int64
	SessionID string
}

func (r *Reconciler) receivers(ctx context.Context, addrs map[string]bool) (map[string]Receiver, error) {
	list := make([]string, 0, len(addrs))
	for a := range addrs {
		list = append(list, a)
	}
	rows, err := r.cfg.Postgres.Query(ctx, `SELECT address, id, session_id FROM receivers WHERE family = 'evm' AND address = ANY($1)`, list)
	if err != nil {
		return nil, fmt.Errorf("matching receivers: %w", err)
	}
	defer rows.Close()
	out := map[string]Receiver{}
	for rows.Next() {
		var a string
		var rc Receiver
		if err := rows.Scan(&a, &rc.ID, &rc.SessionID); err != nil {
			return nil, fmt.Errorf("matching receivers: %w", err)
		}
		out[a] = rc
	}
	return out, rows.Err()
}

// sessionRow is what attribution needs of a session, read under its row
// lock.
type sessionRow struct {
	id, merchantID string
	status         session.Status
	expiresAt      time.Time
	hasPayout      bool
}

// lockSession takes the session's row lock, then reads what decisions
// depend on. The lock comes first, in its own statement: under READ
// COMMITTED a statement reads the snapshot from its start, so an
// EXISTS(payouts) in the locking statement itself would not see a payout
// committed by the transaction it waited for. Every statement after this
// one sees everything committed before the lock was granted.
func lockSession(ctx context.Context, tx pgx.Tx, id string) (sessionRow, error) {
	s := sessionRow{id: id}
	var status string
	if err := tx.QueryRow(ctx, `SELECT status FROM sessions WHERE id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
		return s, fmt.Errorf("locking session %s: %w", id, err)
	}
	// An exception's refund (kind exception_refund) pays back a deposit
	// that did not count; it does not settle the session.
	const q = `SELECT merchant_id, status, expires_at, EXISTS (SELECT 1 FROM payouts WHERE session_id = $1 AND kind IN ('delivery', 'refund'))
		FROM sessions WHERE id = $1`
	if err := tx.QueryRow(ctx, q, id).Scan(&s.merchantID, &status, &s.expiresAt, &s.hasPayout); err != nil {
		return s, fmt.Errorf("reading locked session %s: %w", id, err)
	}
	s.status = session.Status(status)
	return s, nil
}

// classify decides whether a transfer to a session's receiver counts toward
// it. The reason is empty when it does.
func classify(s sessionRow, allowlisted bool, blockTime time.Time) string {
	switch {
	case !allowlisted:
		return ReasonWrongToken
	case s.status == session.Expired:
		return ReasonLate
	case s.status.Terminal() || s.hasPayout:
		return ReasonFinished
	case !blockTime.Before(s.expiresAt):
		// Also for a processing session: a top-up after the deadline
		// does not count, however soon the bounce is decided.
		return ReasonLate
	}
	return ""
}

// ApplyDeposit records a transfer into one of our receivers exactly once
// (its natural key is unique) and applies it to the session: a credited
// deposit moves a waiting session to processing with its source; anything
// else is an exception with its reason. Both are written to the ledger in
// the same transaction.
func (r *Reconciler) ApplyDeposit(ctx context.Context, c *chain.Chain, t *Transfer, rc Receiver) error {
	tok, allowlisted := c.Token(t.Token)
	symbol, decimals := tok.Symbol, tok.Decimals
	if !allowlisted {
		symbol, decimals = "", 0
	}
	var credited, moved, revived bool
	var reason string
	err := pgx.BeginFunc(ctx, r.cfg.Postgres, func(tx pgx.Tx) error {
		s, err := lockSession(ctx, tx, rc.SessionID)
		if err != nil {
			return err
		}
		reason = classify(s, allowlisted, t.BlockTime)
		credited = reason == ""
		const ins = `INSERT INTO deposits (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token, from_address,
			to_address, amount, receiver_id, session_id, credited, exception)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::numeric, $11, $12, $13, NULLIF($14, ''))
			ON CONFLICT (chain_id, block_hash, tx_hash, log_index) DO NOTHING RETURNING applications`
		var applications int
		err = tx.QueryRow(ctx, ins, int64(t.ChainID), int64(t.BlockNumber), t.BlockHash, t.BlockTime, t.TxHash, int32(t.LogIndex),
			t.Token, t.From, t.To, t.Amount.String(), rc.ID, rc.SessionID, credited, reason).Scan(&applications)
		if errors.Is(err, pgx.ErrNoRows) {
			// Known already. Applied (seen or final): nothing to do. Orphaned:
			// its block was replaced and is back (A→B→A), so the transfer is
			// on the canonical chain again and counts again, classified
			// against the session as it is now.
			const revive = `UPDATE deposits SET status = 'seen', credited = $5, exception = NULLIF($6, ''), seen_at = now(),
				orphaned_at = NULL, final_at = NULL, applications = applications + 1
				WHERE chain_id = $1 AND block_hash = $2 AND tx_hash = $3 AND log_index = $4 AND status = 'orphaned'
				RETURNING applications`
			err = tx.QueryRow(ctx, revive, int64(t.ChainID), t.BlockHash, t.TxHash, int32(t.LogIndex), credited, reason).Scan(&applications)
			if errors.Is(err, pgx.ErrNoRows) {
				credited, reason = false, ""
				return errAlreadyApplied
			}
			revived = true
		}
		if err != nil {
			return fmt.Errorf("recording deposit: %w", err)
		}
		kind := "deposit"
		if !credited {
			kind = "exception"
		}
		if credited {
			if err := due(ctx, tx, s.id); err != nil {
				return err
			}
		}
		if err := recordLedger(ctx, tx, entry{
			EntryID: applicationID(fmt.Sprintf("%s:%d:%s:%s:%d", kind, t.ChainID, t.BlockHash, t.TxHash, t.LogIndex), applications), Kind: kind, Reason: reason,
			SessionID: s.id, MerchantID: s.merchantID, ChainID: t.ChainID, Token: t.Token, Symbol: symbol, Decimals: decimals,
			From: t.From, To: t.To, TxHash: t.TxHash, LogIndex: t.LogIndex, BlockNumber: t.BlockNumber, Amount: t.Amount, EventTime: t.BlockTime,
		}); err != nil {
			return err
		}
		if !credited || s.status == session.Processing {
			return nil
		}
		if err := session.Transition(s.status, session.Processing); err != nil {
			return err
		}
		src, err := json.Marshal(session.Source{
			Address: t.From, ChainID: t.ChainID, ChainName: c.Name, TokenAddress: t.Token, TokenSymbol: symbol,
			SentUnits: chain.FormatUnits(t.Amount, decimals), TxHash: t.TxHash,
		})
		if err != nil {
			return err
		}
		const pm = `UPDATE payment_methods SET source = $2 WHERE id = (
			SELECT id FROM payment_methods WHERE receiver_id = $1 ORDER BY id DESC LIMIT 1)`
		if _, err := tx.Exec(ctx, pm, rc.ID, src); err != nil {
			return fmt.Errorf("setting deposit source: %w", err)
		}
		// Last: its event shows the session with the source.
		if err := r.setStatus(ctx, tx, s, session.Processing); err != nil {
			return err
		}
		moved = true
		return nil
	})
	if errors.Is(err, errAlreadyApplied) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("applying deposit %s/%d: %w", t.TxHash, t.LogIndex, err)
	}
	r.metrics.deposits.WithLabelValues(c.Name, fmt.Sprint(credited)).Inc()
	if revived {
		r.metrics.revived.Inc()
		r.logger.WarnContext(ctx, "deposit back on the canonical chain after a reorg; applied again", "session_id", rc.SessionID,
			"tx_hash", t.TxHash, "block_hash", t.BlockHash, "credited", credited, "reason", reason)
	}
	if !credited {
		r.metrics.exceptions.WithLabelValues(reason).Inc()
		r.logger.InfoContext(ctx, "transfer to a receiver not credited", "session_id", rc.SessionID, "reason", reason, "tx_hash", t.TxHash)
	}
	if moved {
		r.metrics.toProcessing.Observe(r.cfg.Now().Sub(t.BlockTime).Seconds())
		r.logger.InfoContext(ctx, "deposit detected", "session_id", rc.SessionID, "chain", c.Name, "tx_hash", t.TxHash, "amount", t.Amount.String())
	}
	return nil
}

var errAlreadyApplied = errors.New("already applied")

// applicationID is the ledger entry id of a deposit's nth application:
// the first keeps the plain id (entries written before re-application
// existed), later ones carry n, so apply → unapply → re-apply → unapply
// each have their own line.
func applicationID(base string, n int) string {
	if n <= 1 {
		return base
	}
	return fmt.Sprintf("%s:%d", base, n)
}

// due makes a session due for Settle's next decision: something it
// depends on changed.
func due(ctx context.Context, tx pgx.Tx, sessionID string) error {
	if _, err := tx.Exec(ctx, `UPDATE sessions SET settle_check_at = '-infinity', settle_wait = NULL WHERE id = $1`, sessionID); err != nil {
		return fmt.Errorf("marking session %s due: %w", sessionID, err)
	}
	return nil
}

// setStatus moves a locked session and records its event, which renders
// the session as the transaction has it then: callers make every other
// change of the session (source, delivery) before they call it.
func (r *Reconciler) setStatus(ctx context.Context, tx pgx.Tx, s sessionRow, to session.Status) error {
	r.metrics.advanced.WithLabelValues(string(to)).Inc()
	if err := session.Transition(s.status, to); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE sessions SET status = $2, updated_at = now() WHERE id = $1`, s.id, string(to)); err != nil {
		return fmt.Errorf("updating session %s: %w", s.id, err)
	}
	if _, err := store.RecordEvent(ctx, tx, store.Change{SessionID: s.id, At: r.cfg.Now()}); err != nil {
		return err
	}
	return nil
}
