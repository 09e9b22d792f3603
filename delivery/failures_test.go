package delivery

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
)

// A payout the treasury cannot cover stays pending with the reason
// recorded and no nonce used, and is paid once the treasury is funded.
func TestUnfundedPayoutWaitsWithoutBurningANonce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(nil)
	dest := randomAddress(t)
	id := f.addPayout(dest, treasuryFunds+1, nil)

	res, err := e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || res.Signed != 0 {
		t.Fatalf("pass %+v, want one error and nothing signed", res)
	}
	p := f.payout(id)
	if p.Status != "pending" || p.Nonce != nil || p.TxHash != nil || p.Error == nil || !strings.Contains(*p.Error, "estimating gas") {
		t.Fatalf("unfunded payout: %+v (error %v), want pending with the estimate's error", p, p.Error)
	}
	var rows int
	if err := f.db.PG.QueryRow(f.ctx, `SELECT count(*) FROM treasury_nonces`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("treasury_nonces has %d rows (%v), want none: no nonce may be taken for a payout that was not signed", rows, err)
	}

	if _, err := f.node.Mint(f.ctx, anvil.DevKeys[0], f.token, f.treasury, big.NewInt(1)); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 10*time.Second, f.status(id))
	p = f.payout(id)
	if p.Status != "mined" || *p.Nonce != 0 || p.Error != nil {
		t.Fatalf("after funding: %+v (error %v), want mined at nonce 0 with the error cleared", p, p.Error)
	}
	if got := f.balance(dest); got.Cmp(big.NewInt(treasuryFunds+1)) != 0 {
		t.Errorf("destination holds %s", got)
	}
}

// Transactions sent with the treasury key outside settle: the nonce
// allocator jumps past them, and a stored payout whose nonce one of them
// took is reported, never re-signed under a new nonce (one of its signings
// could still be mined somewhere, and that would pay twice).
func TestForeignTreasuryTransactions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	foreign := func() {
		t.Helper()
		data, err := anvil.TransferCalldata(anvil.DevAddress(9), big.NewInt(1))
		if err != nil {
			t.Fatal(err)
		}
		hash, err := f.node.SendTx(f.ctx, f.key, &f.token, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.node.WaitReceipt(f.ctx, hash); err != nil {
			t.Fatal(err)
		}
	}
	foreign() // nonce 0

	e, _ := f.executor(nil)
	first := f.addPayout(randomAddress(t), 10, nil)
	f.runUntil(e, 10*time.Second, f.status(first))
	if p := f.payout(first); p.Status != "mined" || *p.Nonce != 1 {
		t.Fatalf("first payout: %+v, want mined at nonce 1 (past the foreign nonce 0)", p)
	}

	dest := randomAddress(t)
	second := f.addPayout(dest, 20, nil)
	crashed, _ := f.executor(nil)
	crashed.skipBroadcast = true
	if res, err := crashed.RunOnce(f.ctx); err != nil || res.Signed != 1 {
		t.Fatalf("crashing pass %+v, %v", res, err)
	}
	stored := f.payout(second)
	if *stored.Nonce != 2 {
		t.Fatalf("second payout stored at nonce %d, want 2", *stored.Nonce)
	}
	foreign() // takes nonce 2 before the stored payout is broadcast

	for range 2 {
		res, err := e.RunOnce(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 1 || res.Signed != 0 || res.Bumped != 0 {
			t.Fatalf("pass %+v, want one error and nothing signed", res)
		}
	}
	p := f.payout(second)
	if p.Status != "sent" || *p.TxHash != *stored.TxHash || *p.Nonce != 2 || len(p.Prior) != 0 {
		t.Errorf("payout whose nonce was taken: %+v, want it unchanged", p)
	}
	if p.Error == nil || !strings.Contains(*p.Error, "nonce 2 was used") {
		t.Errorf("error %v, want it to say the nonce was used", p.Error)
	}
	if got := f.balance(dest); got.Sign() != 0 {
		t.Errorf("destination holds %s, want nothing", got)
	}
	if n := f.storedNonce(); n != 3 {
		t.Errorf("treasury_nonces.next_nonce %d, want 3", n)
	}
}

// Run works until its context ends and then returns nil.
func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(func(c *Config) { c.Interval = 20 * time.Millisecond })
	id := f.addPayout(randomAddress(t), 5, nil)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !f.status(id)() {
		if time.Now().After(deadline) {
			t.Fatal("payout not mined by Run within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
}
