package payout

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
)

// A payout to a contract approves it and then calls it: a call that takes
// the amount ends mined with the contract holding it; a call the contract
// refuses ends reverted, and the approval is revoked so the contract can
// never pull the amount later, when the deposit is refunded.
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

	// Both go to one contract: the second approval waits until the first
	// payout is done with its own.
	res, err := e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 1 || res.Waiting != 1 {
		t.Fatalf("first pass %+v, want one approval signed and one payout waiting", res)
	}
	if p := f.payout(paid); p.Status != "pending" || p.ApproveHash == nil || *p.ApproveNonce != 0 || p.TxHash != nil {
		t.Fatalf("after the approval: %+v", p)
	}
	if p := f.payout(refused); p.ApproveHash != nil {
		t.Fatalf("second approval signed while the first is live: %+v", p)
	}

	f.runUntil(e, 20*time.Second, f.status(paid))
	p := f.payout(paid)
	if p.Status != "mined" || p.TxHash == nil || *p.Nonce != 1 {
		t.Fatalf("deposit payout: %+v, want mined with the call at nonce 1", p)
	}
	call, err := decodeTx(p.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if *call.To() != merchant || string(call.Data()) != string(deposit) || call.Value().Sign() != 0 {
		t.Errorf("stored call goes to %s with %x value %s; want the merchant, the calldata, no value", call.To(), call.Data(), call.Value())
	}
	if got := f.balance(merchant); got.Int64() != paidAmount {
		t.Errorf("merchant holds %s, want %d", got, paidAmount)
	}
	if got, err := f.node.MerchantPaid(f.ctx, merchant, paidOrder); err != nil || got.Int64() != paidAmount {
		t.Errorf("merchant paid[order] = %v, %v; want %d", got, err, paidAmount)
	}
	r, err := f.node.Client().TransactionReceipt(f.ctx, call.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if got := f.allowanceAt(f.treasury, merchant, r.BlockNumber); got.Sign() != 0 {
		t.Errorf("allowance after the deposit %s, want 0 (all pulled)", got)
	}

	// The refused payout: approve, call, reverted.
	f.runUntil(e, 20*time.Second, f.status(refused))
	p = f.payout(refused)
	if p.Status != "reverted" || p.TxHash == nil || p.Error == nil || !strings.Contains(*p.Error, "merchant refuses") {
		t.Fatalf("refused payout: status %s error %v, want reverted with the contract's reason", p.Status, p.Error)
	}
	if *p.ApproveNonce != 2 || *p.Nonce != 3 {
		t.Errorf("refused payout approve nonce %d call nonce %d, want 2 and 3", *p.ApproveNonce, *p.Nonce)
	}
	call, err = decodeTx(p.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if call.Gas() != fixedCallGas {
		t.Errorf("reverting call sent with gas %d, want the fixed %d", call.Gas(), fixedCallGas)
	}
	r, err = f.node.Client().TransactionReceipt(f.ctx, call.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if got := f.allowanceAt(f.treasury, merchant, r.BlockNumber); got.Int64() != refusedAmount {
		t.Errorf("allowance after the refused call %s, want %d until revoked", got, refusedAmount)
	}

	revoked := func() bool {
		p := f.payout(refused)
		return p.RevokeHash != nil && p.RevokeMined
	}
	total := f.runUntil(e, 20*time.Second, revoked)
	p = f.payout(refused)
	if p.Status != "reverted" || *p.RevokeNonce != 4 || !strings.Contains(*p.Error, "merchant refuses") {
		t.Errorf("after the revoke: status %s revoke nonce %d error %v", p.Status, *p.RevokeNonce, p.Error)
	}
	if total.Revoked != 1 {
		t.Errorf("passes until revoked: %+v", total)
	}
	if got := f.allowanceAt(f.treasury, merchant, nil); got.Sign() != 0 {
		t.Errorf("allowance after the revoke %s, want 0", got)
	}
	if got := f.balance(merchant); got.Int64() != paidAmount {
		t.Errorf("merchant holds %s after the refused payout, want %d", got, paidAmount)
	}
	if got := f.balance(f.treasury); got.Int64() != treasuryFunds-paidAmount {
		t.Errorf("treasury holds %s, want %d", got, treasuryFunds-paidAmount)
	}

	// Nothing is left to do.
	if res, err := e.RunOnce(f.ctx); err != nil || res.Progress() || res.Errors != 0 {
		t.Errorf("final pass %+v, %v; want nothing", res, err)
	}
	if n := f.chainNonce(); n != 5 {
		t.Errorf("treasury sent %d transactions, want 5 (approve, call, approve, call, revoke)", n)
	}
	// The revert is final only with its revoke, 12 blocks deep by default.
	if p := f.payout(refused); p.ReceiptFinal || len(p.Revoke) == 0 {
		t.Errorf("refused payout final %v, revoke bytes %d; want not final, bytes kept until it is", p.ReceiptFinal, len(p.Revoke))
	}
	if err := f.node.Mine(f.ctx, 12); err != nil {
		t.Fatal(err)
	}
	total = f.runUntil(e, 20*time.Second, func() bool { return f.payout(refused).ReceiptFinal && f.payout(paid).ReceiptFinal })
	if total.Final != 2 || total.Reorged != 0 || total.Signed != 0 {
		t.Errorf("passes until final: %+v, want 2 receipts final and nothing else", total)
	}
	if res, err := e.RunOnce(f.ctx); err != nil || res != (Result{}) {
		t.Errorf("pass after final %+v, %v; want nothing at all", res, err)
	}
	for outcome, want := range map[string]float64{"mined": 1, "reverted": 1, "revoked": 1, "signed": 5, "final": 2} {
		if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": outcome}); got != want {
			t.Errorf("settle_payouts_total{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
}
