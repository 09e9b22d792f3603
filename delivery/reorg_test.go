package delivery

import (
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
)

// A payout whose block a reorg removes before it is final, and before any
// indexer saw it, goes back to 'sent': the executor broadcasts the same
// signed bytes again, so the destination is paid exactly once.
func TestMinedPayoutReorgedAwayIsSentAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, reg := f.executor(func(c *Config) {
		c.Finality = map[uint64]Finality{f.node.ChainID(): {Depth: 3}}
		c.RebroadcastAfter = 100 * time.Millisecond
		c.WatchEvery = 50 * time.Millisecond
	})
	dest := randomAddress(t)
	const amount = 2_500_000
	id := f.addPayout(dest, amount, nil)
	f.runUntil(e, 20*time.Second, f.status(id))
	before := f.payout(id)
	if before.Status != "mined" || before.ReceiptBlock == nil || before.ReceiptHash == nil || before.ReceiptFinal {
		t.Fatalf("after mining: %+v, want mined with its receipt's block recorded, not final", before)
	}

	if err := f.node.Reorg(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := f.balance(dest); got.Sign() != 0 {
		t.Fatalf("the reorg left the destination %s", got)
	}
	total := f.runUntil(e, 30*time.Second, func() bool {
		p := f.payout(id)
		return p.Status == "mined" && p.ReceiptHash != nil && *p.ReceiptHash != *before.ReceiptHash
	})
	if total.Reorged != 1 || total.Mined != 1 || total.Signed != 0 || total.Bumped != 0 {
		t.Errorf("passes after the reorg: %+v, want one reorg noticed and the same transaction mined again", total)
	}
	after := f.payout(id)
	if *after.TxHash != *before.TxHash || *after.Nonce != *before.Nonce {
		t.Errorf("after the reorg tx %s nonce %d, want the same %s and %d", *after.TxHash, *after.Nonce, *before.TxHash, *before.Nonce)
	}
	if got := f.balance(dest); got.Int64() != amount {
		t.Errorf("destination holds %s, want %d", got, amount)
	}
	if got := f.balance(f.treasury); got.Int64() != treasuryFunds-amount {
		t.Errorf("treasury holds %s, want %d", got, treasuryFunds-amount)
	}
	if n := f.chainNonce(); n != 1 {
		t.Errorf("treasury sent %d transactions, want 1", n)
	}

	// Final three blocks deep, and then left alone.
	if err := f.node.Mine(f.ctx, 3); err != nil {
		t.Fatal(err)
	}
	total = f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).ReceiptFinal })
	if total.Final != 1 {
		t.Errorf("passes until final: %+v", total)
	}
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) {
		t.Errorf("pass after final: %+v, %v; want nothing", res, err)
	}
	if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": "reorged"}); got != 1 {
		t.Errorf("settle_payouts_total{outcome=reorged} = %v, want 1", got)
	}
}

// A reverted call whose funding and execute a reorg both removes is
// followed again: every nonce is refilled by the same signed bytes, the
// call reverts again, and the amount ends back in the treasury. Until then
// the revert is not final, which is what holds back the deposit's refund.
func TestRevertedCallReorgedAwayIsFollowedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	e, _ := f.executor(func(c *Config) {
		c.Finality = map[uint64]Finality{f.node.ChainID(): {Depth: 2}}
		c.RebroadcastAfter = 100 * time.Millisecond
		c.WatchEvery = 50 * time.Millisecond
	})
	const amount = 4_000_000
	refuse, err := anvil.MerchantRevertCalldata(f.token, big.NewInt(amount), [32]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	id := f.addPayout(merchant, amount, refuse)
	f.runUntil(e, 30*time.Second, func() bool { return f.payout(id).Status == "reverted" })
	before := f.payout(id)
	if before.ReceiptFinal {
		t.Fatal("revert final before any confirmation")
	}
	if n := f.chainNonce(); n != 2 {
		t.Fatalf("treasury sent %d transactions, want 2 (fund, execute)", n)
	}

	// Automine put each in its own block: drop both.
	if err := f.node.Reorg(f.ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := f.chainNonce(); n != 0 {
		t.Fatalf("after the reorg the treasury's nonce is %d, want 0", n)
	}
	total := f.runUntil(e, 30*time.Second, func() bool {
		p := f.payout(id)
		return p.Status == "reverted" && p.ReceiptHash != nil && *p.ReceiptHash != *before.ReceiptHash
	})
	if total.Reorged < 1 || total.Signed != 0 || total.Bumped != 0 {
		t.Errorf("passes after the reorg: %+v, want the execute noticed and nothing new signed", total)
	}
	after := f.payout(id)
	if *after.TxHash != *before.TxHash || *after.FundHash != *before.FundHash {
		t.Errorf("transactions changed: before %+v after %+v", before, after)
	}
	if n := f.chainNonce(); n != 2 {
		t.Errorf("treasury sent %d transactions, want the same 2", n)
	}
	if got := f.balance(f.treasury); got.Int64() != treasuryFunds {
		t.Errorf("treasury holds %s, want all %d", got, treasuryFunds)
	}

	if err := f.node.Mine(f.ctx, 2); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).ReceiptFinal })
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) {
		t.Errorf("pass after final: %+v, %v; want nothing", res, err)
	}
}

// Watching receipts costs node calls per payout: it happens at most every
// WatchEvery, and payouts to sign or follow are listed before watched ones.
func TestWatchingIsThrottledAndListedLast(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(func(c *Config) { c.WatchEvery = time.Hour })
	first := f.addPayout(randomAddress(t), 1_000_000, nil)
	f.runUntil(e, 20*time.Second, f.status(first))
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) { // the first watch
		t.Fatalf("pass after mined: %+v, %v", res, err)
	}
	if err := f.node.Reorg(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	second := f.addPayout(randomAddress(t), 1_000_000, nil)
	open, err := listOpen(f.ctx, f.db.PG, []int64{int64(f.node.ChainID())})
	if want := []openPayout{{second, true}, {first, false}}; err != nil || !slices.Equal(open, want) {
		t.Fatalf("listOpen = %v, %v; want %v: the new payout active and first, the mined one watched", open, err, want)
	}
	for range 5 {
		if _, err := e.RunOnce(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p := f.payout(first); p.Status != "mined" {
		t.Errorf("watched again within WatchEvery: status %s", p.Status)
	}
	// Signed at nonce 1, it waits on the gap the reorg left at nonce 0...
	if p := f.payout(second); p.Status != "sent" || *p.Nonce != 1 {
		t.Errorf("new payout %s at nonce %v, want sent at 1", p.Status, p.Nonce)
	}
	// ...until the watch is due, re-broadcasts the first, and both land.
	e.cfg.WatchEvery = 0
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(first).Status == "mined" && f.payout(second).Status == "mined" })
	if n := f.chainNonce(); n != 2 {
		t.Errorf("treasury sent %d transactions, want 2", n)
	}
}
