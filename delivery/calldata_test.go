package delivery

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/anvil"
)

// A payout to a contract funds the payout's runner address, then executes
// it: a call that takes the amount ends mined with the contract holding it
// and no allowance anywhere; a call the contract refuses ends reverted with
// its reason, and the whole amount back in the treasury in the same
// transaction. The treasury never approves anyone.
func TestCalldataPayouts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	e, reg := f.executor(nil)

	const paidAmount, refusedAmount = 5_000_000, 7_000_000
	paidOrder, refusedOrder := [32]byte{1}, [32]byte{2}
	deposit, err := anvil.MerchantDepositCalldata(f.token, big.NewInt(paidAmount), paidOrder)
	if err != nil {
		t.Fatal(err)
	}
	refuse, err := anvil.MerchantRevertCalldata(f.token, big.NewInt(refusedAmount), refusedOrder)
	if err != nil {
		t.Fatal(err)
	}
	paid := f.addPayout(merchant, paidAmount, deposit)
	refused := f.addPayout(merchant, refusedAmount, refuse)

	// Both go to one contract, and need not wait for each other: each has
	// its own runner.
	res, err := e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 2 || res.Waiting != 0 {
		t.Fatalf("first pass %+v, want both runners funded", res)
	}
	p := f.payout(paid)
	if p.Status != "pending" || p.FundHash == nil || *p.FundNonce != 0 || p.TxHash != nil || p.Runner == nil || *p.CallGas != evm.DefaultCallGas {
		t.Fatalf("after the funding: %+v", p)
	}
	runner := common.HexToAddress(*p.Runner)
	fund, err := decodeTx(p.FundRaw)
	if err != nil {
		t.Fatal(err)
	}
	if *fund.To() != f.token || string(fund.Data()) != string(transferData(runner, big.NewInt(paidAmount))) {
		t.Errorf("funding goes to %s with %x; want the token, transfer(runner, amount)", fund.To(), fund.Data())
	}

	f.runUntil(e, 20*time.Second, f.status(paid))
	p = f.payout(paid)
	if p.Status != "mined" || p.TxHash == nil || *p.Nonce < 1 {
		t.Fatalf("deposit payout: %+v, want mined", p)
	}
	exec, err := decodeTx(p.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if *exec.To() != f.executorAddr || exec.Value().Sign() != 0 {
		t.Errorf("stored execute goes to %s value %s; want the executor, no value", exec.To(), exec.Value())
	}
	if got := f.balance(merchant); got.Int64() != paidAmount {
		t.Errorf("merchant holds %s, want %d", got, paidAmount)
	}
	if got, err := f.node.MerchantPaid(f.ctx, merchant, paidOrder); err != nil || got.Int64() != paidAmount {
		t.Errorf("merchant paid[order] = %v, %v; want %d", got, err, paidAmount)
	}
	if got := f.balance(runner); got.Sign() != 0 {
		t.Errorf("runner holds %s after the call, want 0", got)
	}
	if got := f.allowanceAt(runner, merchant, nil); got.Sign() != 0 {
		t.Errorf("runner's allowance to the merchant %s after the call, want 0", got)
	}
	if code, err := f.node.Client().CodeAt(f.ctx, runner, nil); err != nil || len(code) != 0 {
		t.Errorf("runner left code %x (%v); want none", code, err)
	}
	fundReceipt, err := f.node.Client().TransactionReceipt(f.ctx, fund.Hash())
	if err != nil {
		t.Fatal(err)
	}
	execReceipt, err := f.node.Client().TransactionReceipt(f.ctx, exec.Hash())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("call delivery gas: funding %d + execute %d = %d", fundReceipt.GasUsed, execReceipt.GasUsed, fundReceipt.GasUsed+execReceipt.GasUsed)

	f.runUntil(e, 20*time.Second, f.status(refused))
	p = f.payout(refused)
	if p.Status != "reverted" || p.TxHash == nil || p.Error == nil || !strings.Contains(*p.Error, "merchant refuses") {
		t.Fatalf("refused payout: status %s error %v, want reverted with the contract's reason", p.Status, p.Error)
	}
	if got := f.allowanceAt(f.treasury, merchant, nil); got.Sign() != 0 {
		t.Errorf("treasury's allowance to the merchant %s, want 0", got)
	}
	if got := f.balance(merchant); got.Int64() != paidAmount {
		t.Errorf("merchant holds %s after the refused payout, want %d", got, paidAmount)
	}
	// The refused amount came back in the execute itself.
	if got := f.balance(f.treasury); got.Int64() != treasuryFunds-paidAmount {
		t.Errorf("treasury holds %s, want %d", got, treasuryFunds-paidAmount)
	}

	if res, err := e.RunOnce(f.ctx); err != nil || res.Progress() || res.Errors != 0 {
		t.Errorf("final pass %+v, %v; want nothing", res, err)
	}
	if n := f.chainNonce(); n != 4 {
		t.Errorf("treasury sent %d transactions, want 4 (fund, fund, execute, execute)", n)
	}
	if err := f.node.Mine(f.ctx, 12); err != nil {
		t.Fatal(err)
	}
	total := f.runUntil(e, 20*time.Second, func() bool { return f.payout(refused).ReceiptFinal && f.payout(paid).ReceiptFinal })
	if total.Final != 2 || total.Reorged != 0 || total.Signed != 0 {
		t.Errorf("passes until final: %+v, want 2 receipts final and nothing else", total)
	}
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) {
		t.Errorf("pass after final %+v, %v; want nothing at all", res, err)
	}
	for outcome, want := range map[string]float64{"mined": 1, "reverted": 1, "signed": 4, "final": 2} {
		if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": outcome}); got != want {
			t.Errorf("settle_payouts_total{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
}

// settle delivery deploy: the treasury deploys its executor with a nonce
// from treasury_nonces, so payouts signed afterwards do not collide with
// it, and the executor it gets is verified and pays calls.
func TestDeployExecutor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	bare, _ := f.executor(func(c *Config) { c.Executors = nil })
	addr, err := bare.DeployExecutor(f.ctx, f.node.ChainID())
	if err != nil {
		t.Fatal(err)
	}
	if addr == f.executorAddr || f.storedNonce() != 1 || f.chainNonce() != 1 {
		t.Fatalf("deployed at %s, stored nonce %d, chain nonce %d; want a new executor at treasury nonce 0", addr, f.storedNonce(), f.chainNonce())
	}
	e, _ := f.executor(func(c *Config) { c.Executors = map[uint64]common.Address{f.node.ChainID(): addr} })
	deposit, err := anvil.MerchantDepositCalldata(f.token, big.NewInt(3_000_000), [32]byte{3})
	if err != nil {
		t.Fatal(err)
	}
	id := f.addPayout(merchant, 3_000_000, deposit)
	f.runUntil(e, 20*time.Second, f.status(id))
	if p := f.payout(id); p.Status != "mined" || *p.FundNonce != 1 {
		t.Fatalf("payout through the deployed executor: %+v", p)
	}
	if got := f.balance(merchant); got.Int64() != 3_000_000 {
		t.Errorf("merchant holds %s, want 3000000", got)
	}

	// Without an executor a call payout waits for an operator; it is not
	// refunded (the merchant did nothing wrong) and nothing is signed.
	id2 := f.addPayout(merchant, 1_000_000, deposit)
	f.runUntil(bare, 10*time.Second, func() bool { return f.payout(id2).Status == "needs_attention" })
	if p := f.payout(id2); p.FundHash != nil || p.Error == nil || !strings.Contains(*p.Error, "no executor_address") {
		t.Errorf("call payout without an executor: %+v error %s", p, deref(p.Error))
	}
}
