package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/driver"
)

// rowTimeout bounds the work on one payout, so a hung node cannot hold a
// payout's row lock (or the nonce lock) indefinitely.
const rowTimeout = 30 * time.Second

// rpcTimeout bounds node calls made outside a payout's own deadline.
const rpcTimeout = 10 * time.Second

// work is one payout claimed in one Postgres transaction. Handlers write to
// tx and queue events and broadcasts; both happen only once tx committed,
// so nothing is broadcast, logged or counted that the database does not
// hold.
type work struct {
	e    *Executor
	d    Driver
	p    *row
	tx   pgx.Tx
	seen map[string]bool

	res    Result
	events []event
	sends  []send
}

// event is a state change to log and count after the commit.
type event struct {
	outcome string
	step    string // transfer, fund, execute
	hash    string
	attrs   []any
}

// send is a transaction to hand to the node after the commit.
type send struct {
	// tx's Prior are every other signing of its nonce, to tell whether a
	// "nonce too low" answer means ours was mined.
	tx    driver.Tx
	step  string
	first bool
}

// process claims payout id, advances it one step, commits, and then
// broadcasts what that step stored.
func (e *Executor) process(parent context.Context, id int64, seen map[string]bool) Result {
	ctx, cancel := context.WithTimeout(parent, rowTimeout)
	defer cancel()
	var res Result
	fail := func(p *row, err error) Result {
		if parent.Err() != nil {
			return res // shutting down; the next run picks it up
		}
		res.Errors++
		attrs := []any{"payout_id", id, "err", err}
		if p != nil {
			attrs = append(attrs, "session_id", p.sessionID, "kind", p.kind, "chain_id", p.chainID)
			e.metrics.count(p.kind, outcomeError)
		}
		e.logger.WarnContext(parent, "payout step failed; will retry", attrs...)
		if p != nil && p.status == "reverted" {
			// Keep the revert reason of the call; watch trouble is in
			// the logs and the error count.
			return res
		}
		// Its own deadline: the step's may be what ran out.
		rctx, rcancel := context.WithTimeout(parent, 5*time.Second)
		defer rcancel()
		moved, rerr := recordError(rctx, e.pg, id, e.redact(err.Error()), e.cfg.StuckAfter)
		if rerr != nil {
			e.logger.WarnContext(parent, "recording payout error failed", "payout_id", id, "err", rerr)
		}
		if moved {
			res.Attention++
			if p != nil {
				e.metrics.count(p.kind, outcomeAttention)
			}
			e.logger.ErrorContext(parent, "payout failing for longer than StuckAfter; needs attention", append(attrs, "stuck_after", e.cfg.StuckAfter)...)
		}
		return res
	}

	tx, err := e.pg.Begin(ctx)
	if err != nil {
		return fail(nil, fmt.Errorf("beginning transaction: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	p, err := claim(ctx, tx, id)
	if errors.Is(err, errNotClaimed) {
		res.Skipped++
		return res
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		return fail(p, err)
	}
	d, ok := e.chains[p.chainID]
	if !ok {
		res.Skipped++ // listed for another chain set; not ours to touch
		return res
	}
	if err := p.check(d); err != nil {
		_ = tx.Rollback(ctx)
		return fail(p, err)
	}
	w := &work{e: e, d: d, p: p, tx: tx, seen: seen}
	if err := w.run(ctx); err != nil {
		_ = tx.Rollback(ctx)
		return fail(p, err)
	}
	if err := tx.Commit(ctx); err != nil {
		// Nothing was broadcast: if the commit did land, the next pass
		// finds the stored transaction and sends it.
		return fail(p, fmt.Errorf("committing payout %d: %w", id, err))
	}
	res = w.res
	for _, ev := range w.events {
		e.emit(ctx, p, ev, &res)
	}
	for _, s := range w.sends {
		e.broadcast(ctx, d, p, s, &res)
	}
	return res
}

// run dispatches on the payout's stage.
func (w *work) run(ctx context.Context) error {
	p := w.p
	switch {
	case p.status == "needs_attention" && p.txHash == nil:
		// Claimed only with a transaction in flight (attention_sent):
		// here the runner's funding. Follow it, never bump it.
		return w.followFund(ctx)
	case p.status == "sent" || p.status == "needs_attention":
		// needs_attention: the main transaction is in flight; follow it,
		// never bump or re-sign.
		return w.follow(ctx)
	case p.status == "mined" || p.status == "reverted" || p.status == "confirmed":
		if p.status != "confirmed" && !p.receiptFinal && w.e.watchDue(p.id, true) {
			_, err := w.watch(ctx)
			return err
		}
		return nil
	case !p.hasCalldata():
		return w.signTransfer(ctx)
	case p.fundHash == nil:
		return w.signFund(ctx)
	default:
		return w.followFund(ctx)
	}
}

// emit logs and counts a committed state change.
func (e *Executor) emit(ctx context.Context, p *row, ev event, res *Result) {
	msg := "payout " + ev.outcome
	level := slog.LevelInfo
	switch ev.outcome {
	case outcomeSigned:
		res.Signed++
	case outcomeBumped:
		res.Bumped++
		msg = "payout transaction stuck; replaced with higher fees"
	case outcomeMined:
		res.Mined++
	case outcomeReverted:
		// The destination's decision, not a failure of ours: info, like
		// mined.
		res.Reverted++
	case outcomeFinal:
		res.Final++
		msg = "payout receipt final"
	case outcomeReorged:
		res.Reorged++
		level = slog.LevelWarn
		msg = "payout receipt's block was reorged away; following the transaction again"
	case outcomeAttention:
		res.Attention++
		level = slog.LevelError
		msg = "payout needs attention; the executor will not touch it until an operator retries it"
	}
	e.metrics.count(p.kind, ev.outcome)
	attrs := append([]any{"payout_id", p.id, "session_id", p.sessionID, "kind", p.kind, "chain_id", p.chainID,
		"step", ev.step, "tx_hash", ev.hash}, ev.attrs...)
	e.logger.Log(ctx, level, msg, attrs...)
}

// broadcast hands a stored transaction to the node. Failures are logged
// and left for a later pass, which sends the same bytes again.
func (e *Executor) broadcast(ctx context.Context, d Driver, p *row, s send, res *Result) {
	if e.skipBroadcast {
		return
	}
	e.markSent(s.tx.Hash)
	if err := d.Broadcast(ctx, s.tx); err != nil {
		res.Errors++
		e.metrics.count(p.kind, outcomeError)
		e.logger.WarnContext(ctx, "broadcasting payout transaction failed; the stored bytes will be sent again",
			"payout_id", p.id, "session_id", p.sessionID, "kind", p.kind, "chain_id", p.chainID, "step", s.step, "tx_hash", s.tx.Hash, "err", err)
		return
	}
	if s.first {
		res.Broadcast++
		e.metrics.count(p.kind, outcomeBroadcast)
	} else {
		res.Rebroadcast++
		e.metrics.count(p.kind, outcomeRebroadcast)
	}
}

// signed queues the log line and first broadcast of a freshly stored
// transaction (a new signing, or a fee bump whose Prior are the signings
// it replaces).
func (w *work) signed(step string, s driver.Signed, outcome string) {
	w.seen[s.Hash] = true
	w.events = append(w.events, event{outcome: outcome, step: step, hash: s.Hash, attrs: s.Attrs})
	w.sends = append(w.sends, send{tx: s.Tx, step: step, first: true})
}

// rebroadcast queues the stored bytes of an unmined transaction for sending
// again, if RebroadcastAfter passed since this process last sent them.
func (w *work) rebroadcast(step string, t driver.Tx) error {
	if len(t.Raw) == 0 {
		return errors.New("stored transaction is empty")
	}
	if !w.e.dueForRebroadcast(t.Hash, w.seen) {
		return nil
	}
	w.sends = append(w.sends, send{tx: t, step: step})
	return nil
}
