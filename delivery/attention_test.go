package delivery

import (
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/settle-dev/settle/internal/anvil"
)

// At the fee ceiling a stuck transaction is not bumped without end: the
// payout needs attention, and its signed transaction is still followed,
// so when a block finally takes it the payout is mined, once.
func TestFeeCeilingStopsBumpsAndNeedsAttention(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.node.SetAutomine(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	ceiling := big.NewInt(3_000_000_000) // 3 gwei: anvil's first fees fit, a 10% bump does not
	e, reg := f.executor(func(c *Config) {
		c.RebroadcastAfter = 10 * time.Millisecond
		c.BumpAfter = 200 * time.Millisecond
		c.MaxFeePerGas = map[uint64]*big.Int{f.node.ChainID(): ceiling}
	})
	dest := randomAddress(t)
	id := f.addPayout(dest, 555, nil)
	if res, err := e.RunOnce(f.ctx); err != nil || res.Signed != 1 {
		t.Fatalf("first pass %+v, %v", res, err)
	}
	first, err := decodeTx(f.payout(id).RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if first.GasFeeCap().Cmp(ceiling) > 0 {
		t.Fatalf("signed with fee cap %s above the ceiling %s", first.GasFeeCap(), ceiling)
	}
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).Status == "needs_attention" })
	p := f.payout(id)
	if p.Error == nil || !strings.Contains(*p.Error, "fee ceiling") || (*p.TxHash != first.Hash().Hex() && !slices.Contains(p.Prior, first.Hash().Hex())) {
		t.Fatalf("at the ceiling: %+v error %s", p, deref(p.Error))
	}
	// A bump up to the ceiling is fine; none may go above it.
	if tx, _ := decodeTx(p.RawTx); tx.GasFeeCap().Cmp(ceiling) > 0 || tx.Nonce() != first.Nonce() {
		t.Errorf("bumped to fee cap %s nonce %d; want at most %s, nonce %d", tx.GasFeeCap(), tx.Nonce(), ceiling, first.Nonce())
	}
	if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": "needs_attention"}); got != 1 {
		t.Errorf("needs_attention count %v, want 1", got)
	}
	// Still followed: a block takes it and it ends mined, paid once.
	if err := f.node.Mine(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).Status == "mined" })
	if got := f.balance(dest); got.Int64() != 555 {
		t.Errorf("destination holds %s, want 555", got)
	}
	if n := f.chainNonce(); n != 1 {
		t.Errorf("treasury nonce %d, want 1", n)
	}
}

// A payout that keeps failing before anything is signed (here: the
// treasury does not hold the amount, so every attempt fails its funds
// check) needs attention after StuckAfter, burns no nonce, and is left
// alone from then on.
func TestFailingPayoutNeedsAttentionAfterStuckAfter(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(func(c *Config) { c.StuckAfter = 300 * time.Millisecond })
	id := f.addPayout(randomAddress(t), treasuryFunds+1, nil)
	total := f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).Status == "needs_attention" })
	if total.Attention != 1 || total.Signed != 0 {
		t.Errorf("passes %+v, want one payout to need attention and nothing signed", total)
	}
	if p := f.payout(id); p.Error == nil || !strings.Contains(*p.Error, "insufficient balance") || p.TxHash != nil {
		t.Errorf("payout %+v error %s", p, deref(p.Error))
	}
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) {
		t.Errorf("pass after: %+v, %v; want the payout left alone", res, err)
	}
	if n := f.chainNonce(); n != 0 {
		t.Errorf("treasury nonce %d, want 0", n)
	}
}

// A refund whose transfer reverts has nothing after it (a delivery that
// reverts is refunded; a refund is the end of the line): once the revert
// is final, it needs attention. The token is made to refuse between the
// signing and the block, as a blacklist or a pause would.
func TestRevertedRefundNeedsAttention(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.node.SetAutomine(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	e, _ := f.executor(func(c *Config) {
		c.Finality = map[uint64]Finality{f.node.ChainID(): {Depth: 1}}
		c.WatchEvery = time.Millisecond
	})
	id := f.addPayout(randomAddress(t), 1234, nil)
	if _, err := f.db.PG.Exec(f.ctx, `UPDATE payouts SET kind = 'refund' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if res, err := e.RunOnce(f.ctx); err != nil || res.Signed != 1 {
		t.Fatalf("first pass %+v, %v", res, err)
	}
	// TestToken's balanceOf is storage slot 4: empty the treasury.
	slot := crypto.Keccak256Hash(common.LeftPadBytes(f.treasury.Bytes(), 32), common.LeftPadBytes([]byte{4}, 32))
	if err := f.node.RPC().CallContext(f.ctx, nil, "anvil_setStorageAt", f.token, slot, common.Hash{}); err != nil {
		t.Fatal(err)
	}
	if err := f.node.Mine(f.ctx, 3); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).Status == "needs_attention" })
	if p := f.payout(id); p.Error == nil || !strings.Contains(*p.Error, "refund transfer") || !p.ReceiptFinal {
		t.Errorf("refund %+v error %s", p, deref(p.Error))
	}
}

// A runner's funding that the chain does not mine is bumped like the main
// transaction, under the same nonce; whichever signing is mined, the
// payout executes once.
func TestStuckFundingIsBumped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := f.node.SetAutomine(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	e, _ := f.executor(func(c *Config) {
		c.RebroadcastAfter = 10 * time.Millisecond
		c.BumpAfter = 300 * time.Millisecond
	})
	deposit, err := anvil.MerchantDepositCalldata(f.token, big.NewInt(2_000_000), [32]byte{4})
	if err != nil {
		t.Fatal(err)
	}
	id := f.addPayout(merchant, 2_000_000, deposit)
	if res, err := e.RunOnce(f.ctx); err != nil || res.Signed != 1 {
		t.Fatalf("first pass %+v, %v", res, err)
	}
	first := *f.payout(id).FundHash
	total := f.runUntil(e, 20*time.Second, func() bool { return *f.payout(id).FundHash != first })
	if total.Bumped != 1 {
		t.Errorf("passes until the bump: %+v", total)
	}
	var prior []string
	if err := f.db.PG.QueryRow(f.ctx, `SELECT fund_prior_tx_hashes FROM payouts WHERE id = $1`, id).Scan(&prior); err != nil || !slices.Equal(prior, []string{first}) {
		t.Errorf("fund_prior_tx_hashes %v (%v), want [%s]", prior, err, first)
	}
	if err := f.node.SetAutomine(f.ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := f.node.Mine(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, f.status(id))
	if p := f.payout(id); p.Status != "mined" {
		t.Fatalf("payout %s (%s), want mined", p.Status, deref(p.Error))
	}
	if got := f.balance(merchant); got.Int64() != 2_000_000 {
		t.Errorf("merchant holds %s, want 2000000", got)
	}
	if n := f.chainNonce(); n != 2 {
		t.Errorf("treasury nonce %d, want 2 (one funding, one execute)", n)
	}
}

// A funding that reverted moved nothing: the payout needs attention (the
// treasury's trouble, not the merchant's, so no bounce), and a retry funds
// the runner afresh under a new nonce and delivers once.
func TestRevertedFundingRetriedIsFundedAfresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := f.node.SetAutomine(f.ctx, false); err != nil {
		t.Fatal(err)
	}
	e, _ := f.executor(nil)
	deposit, err := anvil.MerchantDepositCalldata(f.token, big.NewInt(3_000_000), [32]byte{5})
	if err != nil {
		t.Fatal(err)
	}
	id := f.addPayout(merchant, 3_000_000, deposit)
	if res, err := e.RunOnce(f.ctx); err != nil || res.Signed != 1 {
		t.Fatalf("first pass %+v, %v", res, err)
	}
	// Empty the treasury's TestToken balance (slot 4) before the block.
	slot := crypto.Keccak256Hash(common.LeftPadBytes(f.treasury.Bytes(), 32), common.LeftPadBytes([]byte{4}, 32))
	if err := f.node.RPC().CallContext(f.ctx, nil, "anvil_setStorageAt", f.token, slot, common.Hash{}); err != nil {
		t.Fatal(err)
	}
	if err := f.node.SetAutomine(f.ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := f.node.Mine(f.ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, func() bool { return f.payout(id).Status == "needs_attention" })
	if p := f.payout(id); p.Error == nil || !strings.Contains(*p.Error, "funding of runner") {
		t.Fatalf("after the reverted funding: %+v error %s", p, deref(p.Error))
	}
	if _, err := f.node.Mint(f.ctx, anvil.DevKeys[0], f.token, f.treasury, big.NewInt(treasuryFunds)); err != nil {
		t.Fatal(err)
	}
	if err := Retry(f.ctx, f.db.PG, id, "test", "treasury refilled"); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 20*time.Second, f.status(id))
	p := f.payout(id)
	if p.Status != "mined" || *p.FundNonce != 1 {
		t.Fatalf("after the retry: %s fund nonce %v (%s), want mined with a new funding at nonce 1", p.Status, p.FundNonce, deref(p.Error))
	}
	if got := f.balance(merchant); got.Int64() != 3_000_000 {
		t.Errorf("merchant holds %s, want 3000000", got)
	}
}
