package delivery

import (
	"math/big"
	"slices"
	"testing"
	"time"
)

// A transaction the chain does not mine is re-broadcast and then replaced
// with higher fees under the same nonce; once a block comes, the payout is
// mined and paid exactly once.
func TestStuckTransactionIsBumped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.node.SetAutomine(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	const bumpAfter = time.Second
	e, reg := f.executor(func(c *Config) {
		c.RebroadcastAfter = 10 * time.Millisecond
		c.BumpAfter = bumpAfter
	})
	dest := randomAddress(t)
	const amount = 777
	id := f.addPayout(dest, amount, nil)

	res, err := e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 1 || res.Broadcast != 1 {
		t.Fatalf("first pass %+v", res)
	}
	first := f.payout(id)
	firstTx, err := decodeTx(first.RawTx)
	if err != nil {
		t.Fatal(err)
	}

	// Before BumpAfter: the same bytes go out again, nothing is re-signed.
	time.Sleep(30 * time.Millisecond)
	res, err = e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rebroadcast != 1 || res.Bumped != 0 || res.Errors != 0 {
		t.Fatalf("pass before BumpAfter: %+v, want one clean re-broadcast", res)
	}
	if p := f.payout(id); p.Status != "sent" || *p.TxHash != *first.TxHash {
		t.Fatalf("payout changed before BumpAfter: %+v", p)
	}

	time.Sleep(bumpAfter)
	res, err = e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bumped != 1 || res.Errors != 0 {
		t.Fatalf("pass after BumpAfter: %+v, want one bump", res)
	}
	bumped := f.payout(id)
	if bumped.Status != "sent" || *bumped.TxHash == *first.TxHash || !slices.Equal(bumped.Prior, []string{*first.TxHash}) {
		t.Fatalf("after bump: tx %s prior %v; want a new hash and the old one in prior_tx_hashes", *bumped.TxHash, bumped.Prior)
	}
	if *bumped.Nonce != *first.Nonce || !bumped.SentAt.After(*first.SentAt) {
		t.Errorf("bump changed nonce %d -> %d or kept sent_at", *first.Nonce, *bumped.Nonce)
	}
	bumpedTx, err := decodeTx(bumped.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	atLeast := func(what string, old, new *big.Int) {
		// new >= old * 1.25
		if new4 := new4x(new); new4.Cmp(new5x(old)) < 0 {
			t.Errorf("%s raised from %s to %s, less than 25%%", what, old, new)
		}
	}
	atLeast("tip", firstTx.GasTipCap(), bumpedTx.GasTipCap())
	atLeast("fee cap", firstTx.GasFeeCap(), bumpedTx.GasFeeCap())
	if bumpedTx.Nonce() != firstTx.Nonce() || bumpedTx.Gas() != firstTx.Gas() || string(bumpedTx.Data()) != string(firstTx.Data()) || *bumpedTx.To() != *firstTx.To() {
		t.Errorf("replacement differs from the original beyond its fees")
	}
	if bal := f.balance(dest); bal.Sign() != 0 {
		t.Fatalf("destination paid %s before any block", bal)
	}

	if err := f.node.Mine(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 10*time.Second, f.status(id))
	p := f.payout(id)
	if p.Status != "mined" {
		t.Fatalf("status %s, want mined", p.Status)
	}
	// Either signing may win; the row names the one that did.
	hashes := []string{*first.TxHash, *bumped.TxHash}
	if !slices.Contains(hashes, *p.TxHash) || len(p.Prior) != 1 || !slices.Contains(hashes, p.Prior[0]) || p.Prior[0] == *p.TxHash {
		t.Errorf("mined row has tx %s prior %v, want one of %v each", *p.TxHash, p.Prior, hashes)
	}
	if got := f.balance(dest); got.Int64() != amount {
		t.Errorf("destination holds %s, want %d", got, amount)
	}
	if sent := f.transfersFromTreasury(); len(sent) != 1 || len(sent[dest]) != 1 {
		t.Errorf("transfers from the treasury: %v, want exactly one", sent)
	}
	if n := f.chainNonce(); n != 1 {
		t.Errorf("treasury nonce on chain %d, want 1", n)
	}
	if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": "bumped"}); got != 1 {
		t.Errorf("settle_payouts_total{outcome=bumped} = %v, want 1", got)
	}
}

func new4x(x *big.Int) *big.Int { return new(big.Int).Mul(x, big.NewInt(4)) }
func new5x(x *big.Int) *big.Int { return new(big.Int).Mul(x, big.NewInt(5)) }
