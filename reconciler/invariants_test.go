package reconciler

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
)

// A deposit in block A, orphaned when B replaced A, must count again when
// A comes back: today's ON CONFLICT DO NOTHING took the orphaned row for
// an applied one and the deposit on the canonical chain was lost.
func TestDepositRevivedAfterABAReorg(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	pay := xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("1", 64)}

	h.block(1, "0xa1", pay)
	h.step()
	if got := h.status(id); got != session.Processing {
		t.Fatalf("after block A: %s, want processing", got)
	}

	// B replaces A.
	h.orphan(1, "0xa1", pay)
	h.block(1, "0xb1")
	h.step()
	if got := h.status(id); got != session.WaitingPayment {
		t.Fatalf("after B replaced A: %s, want waiting_payment", got)
	}

	// A comes back, and two blocks make it final.
	h.orphan(1, "0xb1")
	h.block(1, "0xa1", pay)
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()
	if got := h.status(id); got != session.Processing {
		t.Fatalf("after A came back: %s, want processing (the deposit is on the canonical chain)", got)
	}
	if got, want := h.deposits(id), []string{"final/true"}; !slices.Equal(got, want) {
		t.Fatalf("deposits %v, want %v", got, want)
	}
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["delivery"] != units(10, 6).String() || len(got) != 1 {
		t.Fatalf("payouts %v, want one delivery of 10 USDC", got)
	}
	// Apply, unapply and re-apply each have their own ledger line, so the
	// statement nets to one deposit.
	led := h.ledger(id)
	if len(led) != 3 || !strings.HasPrefix(led[0], "deposit:") || !strings.HasPrefix(led[1], "unapply:") || !strings.HasPrefix(led[2], "deposit:") || led[2] == led[0] {
		t.Fatalf("ledger %v, want deposit, unapply, and a second deposit with its own id", led)
	}

	// And once more: A orphaned again after re-apply is un-applied again.
	h.orphan(1, "0xa1", pay)
	h.orphan(2, "0xa2")
	h.orphan(3, "0xa3")
	h.block(1, "0xc1")
	h.step()
	if n := len(h.ledger(id)); n != 3 {
		t.Fatalf("a final deposit must not be un-applied: ledger has %d lines", n)
	}
}

// A revived deposit whose session has moved on is an exception, like any
// late transfer: revival re-classifies against the session as it is now.
func TestRevivedDepositReclassified(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	first := xfer{token: usdc, from: payer, to: rc, amount: units(4, 6), tx: "0x" + strings.Repeat("2", 64)}
	h.block(1, "0xa1", first)
	h.step()
	h.orphan(1, "0xa1", first)
	h.block(1, "0xb1")
	h.step()
	// Meanwhile the payer paid in full in block 2 of the new fork, which
	// settles the session.
	full := xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("3", 64)}
	h.block(2, "0xb2", full)
	h.block(3, "0xb3")
	h.block(4, "0xb4")
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["delivery"] == "" {
		t.Fatalf("payouts %v, want a delivery", got)
	}
	// Then A's fork wins after all, with the first transfer in it.
	h.orphan(1, "0xb1")
	h.orphan(2, "0xb2", full)
	h.orphan(3, "0xb3")
	h.orphan(4, "0xb4")
	h.block(1, "0xa1", first)
	h.step()
	if credited, reason := h.classified(first.tx); credited || reason != ReasonFinished {
		t.Fatalf("revived deposit credited=%v reason=%v, want an after_session_finished exception", credited, reason)
	}
}

// Sessions that Settle cannot act on must not occupy its queue: 500 of
// them (a credit that converts to 0 units, an underpayment split across
// two tokens past its deadline, an underpayment before its deadline) and
// one good session: the good one gets its delivery in one pass, and the
// next pass has nothing to do.
func TestStuckSessionsDoNotBlockSettle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := *h.now.Load()
	var transfers []xfer
	var dust, split, under []string
	for i := range 500 {
		tx := fmt.Sprintf("0x%064x", i+1)
		switch i % 3 {
		case 0: // 1 wei of DAI toward an open USDC amount: 0 units
			id, rc := h.session(sessionOpts{})
			dust = append(dust, id)
			transfers = append(transfers, xfer{token: dai, from: payer, to: rc, amount: big.NewInt(1), tx: tx})
		case 1: // 4 USDC + 5 DAI of 10, past the deadline: a manual refund
			id, rc := h.session(sessionOpts{amount: units(10, 6), expires: now.Add(-time.Minute)})
			split = append(split, id)
			transfers = append(transfers, xfer{token: usdc, from: payer, to: rc, amount: units(4, 6), tx: tx},
				xfer{token: dai, from: payer, to: rc, amount: units(5, 18), tx: tx, log: 1})
		case 2: // 5 of 10 before the deadline
			id, rc := h.session(sessionOpts{amount: units(10, 6)})
			under = append(under, id)
			transfers = append(transfers, xfer{token: usdc, from: payer, to: rc, amount: units(5, 6), tx: tx})
		}
	}
	good, rc := h.session(sessionOpts{amount: units(10, 6)})
	// Sorted last in the block, so it is the session that changed last.
	transfers = append(transfers, xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("f", 64)})
	h.block(1, "0xa1", transfers...)
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()

	more, err := h.r.Settle(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(good); got["delivery"] != units(10, 6).String() {
		t.Fatalf("good session's payouts after one pass: %v, want a delivery of 10 USDC", got)
	}
	if more {
		t.Fatal("Settle reports more work after a pass that left only sessions it cannot act on")
	}
	for _, id := range split {
		if got := h.payouts(id); len(got) != 0 {
			t.Fatalf("split session %s has payouts %v, want none (manual refund)", id, got)
		}
	}
	for _, id := range append(dust, under...) {
		if got := h.payouts(id); len(got) != 0 {
			t.Fatalf("session %s has payouts %v before its deadline", id, got)
		}
	}
	// A second pass does no work at all: nothing is due.
	var due int
	if err := h.pg.QueryRow(h.ctx, `SELECT count(*) FROM sessions s WHERE status = 'processing' AND settle_check_at <= $1
		AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.session_id = s.id)`, now).Scan(&due); err != nil {
		t.Fatal(err)
	}
	if due != 0 {
		t.Fatalf("%d sessions still due for a decision", due)
	}

	// Past the deadline, the dust and the underpayments bounce; the split
	// ones stay parked for a person.
	h.setNow(now.Add(2 * time.Hour))
	h.block(4, "0xa4") // attributed past the deadline
	h.block(5, "0xa5")
	h.block(6, "0xa6")
	h.block(7, "0xa7")
	h.step()
	if err := h.attributePast(now.Add(2 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(dust, under...) {
		if got := h.payouts(id); got["refund"] == "" {
			t.Fatalf("session %s past its deadline has payouts %v, want a refund", id, got)
		}
	}
	for _, id := range split {
		if got := h.payouts(id); len(got) != 0 {
			t.Fatalf("split session %s has payouts %v, want none (manual refund)", id, got)
		}
	}
}

// attributePast stamps the reconciler cursor's final block time at t, as if
// the chain had moved on to t: the harness's blocks carry fixed times an
// hour in the past.
func (h *harness) attributePast(t time.Time) error {
	_, err := h.pg.Exec(h.ctx, `UPDATE reconciler_cursors SET block_time = $2, final_block_time = $2 WHERE chain_id = $1`, testChainID, t)
	return err
}

// A deposit applied while decide holds the session's lock is credited to a
// session whose payout is already scheduled only if the EXISTS(payouts)
// read came from before the lock wait. It must be after_session_finished.
func TestDepositWaitingOnDecideLockSeesThePayout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(10, 6)})
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()

	// Connection A plays decide: lock the session, then (after B waits on
	// the lock) schedule the payout and commit.
	a, err := h.pg.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback(h.ctx) //nolint:errcheck // a no-op after Commit
	if _, err := lockSession(h.ctx, a, id); err != nil {
		t.Fatal(err)
	}
	// Connection B: a top-up in block 4 arrives.
	top := xfer{token: usdc, from: payer, to: rc, amount: units(1, 6), tx: "0x" + strings.Repeat("4", 64)}
	h.block(4, "0xa4", top)
	done := make(chan error, 1)
	go func() {
		tr := &Transfer{ChainID: testChainID, BlockNumber: 4, BlockHash: "0xa4", BlockTime: h.blockTime(4), TxHash: top.tx,
			Token: usdc, From: payer, To: rc, Amount: top.amount}
		recv, err := h.r.receivers(h.ctx, map[string]bool{rc: true})
		if err != nil {
			done <- err
			return
		}
		done <- h.r.ApplyDeposit(h.ctx, h.c, tr, recv[rc])
	}()
	waitForLockWaiter(t, h.ctx, h.pg, id)
	if err := h.r.insertPayout(h.ctx, a, id, "delivery", testChainID, usdc, merchantDst, units(10, 6), ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if credited, reason := h.classified(top.tx); credited || reason != ReasonFinished {
		t.Fatalf("top-up applied after the payout was scheduled: credited=%v reason=%v, want after_session_finished", credited, reason)
	}
}

// waitForLockWaiter waits until some backend waits on a lock while running
// a statement about session id.
func waitForLockWaiter(t *testing.T, ctx context.Context, pg interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no statement waits on the lock of session %s", id)
}

// An underpaid session bounces only once its deadline has passed in the
// attributed final blocks of every chain, not on the wall clock: a top-up
// mined in time but not attributed yet must still count.
func TestBounceWaitsForAttribution(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// The deadline is block 10's time, long past on the clock.
	id, rc := h.session(sessionOpts{amount: units(10, 6), expires: h.blockTime(10)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(5, 6), tx: "0x" + strings.Repeat("5", 64)})
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); len(got) != 0 {
		t.Fatalf("payouts %v while only block 1 of the chain is final and attributed; want none yet", got)
	}
	// The top-up, mined in block 5 (before the deadline), attributed late.
	h.block(4, "0xa4")
	h.block(5, "0xa5", xfer{token: usdc, from: payer, to: rc, amount: units(5, 6), tx: "0x" + strings.Repeat("6", 64)})
	h.block(6, "0xa6")
	h.block(7, "0xa7")
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["delivery"] != units(10, 6).String() || len(got) != 1 {
		t.Fatalf("payouts %v, want one delivery of 10 USDC", got)
	}
}

// Past the deadline in final blocks, an underpaid session bounces.
func TestBounceOnceDeadlineIsFinal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6), expires: h.blockTime(3)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(5, 6), tx: "0x" + strings.Repeat("7", 64)})
	for n := uint64(2); n <= 5; n++ {
		h.block(n, fmt.Sprintf("0xa%d", n))
	}
	h.step() // final through block 3: the deadline's block
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["refund"] != units(5, 6).String() || len(got) != 1 {
		t.Fatalf("payouts %v, want one refund of 5 USDC", got)
	}
}

// An indexer rewind between the reconciler's read of a range's transfers
// and its read of the cursor block's hash must not move the cursor onto
// the new fork: the new fork's blocks were not attributed, and a deposit
// in them would be lost.
func TestCursorDoesNotSkipAForkWrittenMidStep(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	h.block(1, "0xa1")
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	pay := xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("8", 64)}
	h.r.afterRead = func() {
		h.r.afterRead = nil
		// The indexer finds blocks 2 and 3 replaced, and writes the new
		// fork, whose block 2 carries the deposit.
		h.orphan(2, "0xa2")
		h.orphan(3, "0xa3")
		h.block(2, "0xb2", pay)
		h.block(3, "0xb3")
	}
	h.step()
	h.block(4, "0xb4")
	h.block(5, "0xb5")
	h.step()
	if got := h.status(id); got != session.Processing {
		t.Fatalf("status %s, want processing: the deposit in the new fork's block 2 was never attributed", got)
	}
	if got, want := h.deposits(id), []string{"final/true"}; !slices.Equal(got, want) {
		t.Fatalf("deposits %v, want %v", got, want)
	}
}

// A cursor stored with no hash (as a rewind mid-step used to leave it)
// is treated as replaced: its range is read again.
func TestCursorWithoutHashIsReread(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("9", 64)})
	if _, err := h.pg.Exec(h.ctx, `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time) VALUES ($1, 1, '', 'epoch')`, testChainID); err != nil {
		t.Fatal(err)
	}
	h.step()
	if got := h.status(id); got != session.Processing {
		t.Fatalf("status %s, want processing: block 1 was never read", got)
	}
}

// Converting a deposit to the destination's decimals truncates; the part
// below one destination unit stays in the treasury and is recorded as a
// conversion_dust exception in the deposit's own token, so the statement's
// variance is accounted for to the last unit.
func TestConversionDustIsRecorded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{})
	paid := new(big.Int).Add(units(10, 18), big.NewInt(123_456_789_012)) // 10.000000123456789012 DAI
	h.block(1, "0xa1", xfer{token: dai, from: payer, to: rc, amount: paid, tx: "0x" + strings.Repeat("a", 64)})
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["delivery"] != "10000000" {
		t.Fatalf("payouts %v, want a delivery of 10.000000 USDC", got)
	}
	var token, amount string
	if err := h.pg.QueryRow(h.ctx, `SELECT token, amount::text FROM ledger_entries WHERE session_id = $1 AND kind = 'exception' AND reason = $2`,
		id, ReasonConversionDust).Scan(&token, &amount); err != nil {
		t.Fatalf("no conversion_dust entry: %v (ledger %v)", err, h.ledger(id))
	}
	if token != dai || amount != "123456789012" {
		t.Fatalf("dust entry %s %s, want %s 123456789012", amount, token, dai)
	}
}

// A deposit counts as in time when its block is stamped before the
// deadline, whatever the session's status: a top-up of an underpaid
// session mined after the deadline is late, not credited because the
// bounce had not been decided yet (which would make the outcome depend on
// how fast the reconciler ran).
func TestTopUpAfterDeadlineIsLate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6), expires: h.blockTime(5)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(4, 6), tx: "0x" + strings.Repeat("b", 64)})
	h.step()
	late := xfer{token: usdc, from: payer, to: rc, amount: units(6, 6), tx: "0x" + strings.Repeat("c", 64)}
	h.block(6, "0xa6", late)
	h.step()
	if credited, reason := h.classified(late.tx); credited || reason != ReasonLate {
		t.Fatalf("top-up mined after the deadline: credited=%v reason=%v, want a late exception", credited, reason)
	}
	for n := uint64(7); n <= 9; n++ {
		h.block(n, fmt.Sprintf("0xa%d", n))
	}
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["refund"] != units(4, 6).String() || len(got) != 1 {
		t.Fatalf("payouts %v, want one refund of the 4 USDC paid in time", got)
	}
}
