package delivery

import (
	"bytes"
	"math/big"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// A plain payout is signed, stored, broadcast and mined, pays exactly its
// amount once, and a later pass leaves it alone.
func TestPlainPayoutIsPaidOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, reg := f.executor(nil)
	dest := randomAddress(t)
	const amount = 1_234_567
	id := f.addPayout(dest, amount, nil)

	res, err := e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 1 || res.Broadcast != 1 || res.Errors != 0 {
		t.Fatalf("first pass %+v, want one signed and broadcast", res)
	}
	p := f.payout(id)
	if p.Status != "sent" || p.Nonce == nil || *p.Nonce != 0 || p.TxHash == nil || p.SentAt == nil {
		t.Fatalf("after signing: %+v", p)
	}
	if p.From == nil || *p.From != hexAddr(f.treasury) {
		t.Errorf("from_address %v, want %s", p.From, hexAddr(f.treasury))
	}
	stored, err := decodeTx(p.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Hash().Hex() != *p.TxHash || stored.Type() != 2 || stored.ChainId().Uint64() != f.node.ChainID() {
		t.Errorf("raw_tx is type %d on chain %s with hash %s; want a dynamic-fee tx hashing to %s", stored.Type(), stored.ChainId(), stored.Hash().Hex(), *p.TxHash)
	}
	if !bytes.Equal(stored.Data(), transferData(dest, big.NewInt(amount))) || *stored.To() != f.token {
		t.Errorf("stored tx calls %s with %x, want transfer on the token", stored.To(), stored.Data())
	}

	total := f.runUntil(e, 10*time.Second, f.status(id))
	if total.Mined != 1 {
		t.Errorf("passes until mined: %+v", total)
	}
	p = f.payout(id)
	if p.Status != "mined" || *p.TxHash != stored.Hash().Hex() || len(p.Prior) != 0 || p.Error != nil {
		t.Fatalf("after mining: status %s tx %s prior %v error %v", p.Status, *p.TxHash, p.Prior, p.Error)
	}
	if got := f.balance(dest); got.Int64() != amount {
		t.Errorf("destination holds %s, want %d", got, amount)
	}
	if got := f.balance(f.treasury); got.Int64() != treasuryFunds-amount {
		t.Errorf("treasury holds %s, want %d", got, treasuryFunds-amount)
	}
	if sent := f.transfersFromTreasury(); len(sent) != 1 || len(sent[dest]) != 1 {
		t.Errorf("transfers from the treasury: %v, want one to %s", sent, dest)
	}

	// A further pass changes nothing, on chain or in the row.
	before := f.payout(id)
	res, err = e.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res != (Result{}) {
		t.Errorf("pass after mined: %+v, want nothing", res)
	}
	if after := f.payout(id); !reflect.DeepEqual(before, after) {
		t.Errorf("row changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := f.chainNonce(); n != 1 {
		t.Errorf("treasury sent %d transactions, want 1", n)
	}

	chain := strconv.FormatUint(f.node.ChainID(), 10)
	for outcome, want := range map[string]float64{"signed": 1, "broadcast": 1, "mined": 1, "error": 0} {
		if got := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "delivery", "outcome": outcome}); got != want {
			t.Errorf("settle_payouts_total{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	// The gauges were read on the first pass, before the payout.
	if got := metricValue(t, reg, "settle_treasury_balance", map[string]string{"chain_id": chain, "symbol": "TUSD"}); got != treasuryFunds/1e6 {
		t.Errorf("settle_treasury_balance = %v, want %v", got, treasuryFunds/1e6)
	}
	if got := metricValue(t, reg, "settle_treasury_native_balance_wei", map[string]string{"chain_id": chain}); got != 100e18 {
		t.Errorf("settle_treasury_native_balance_wei = %v, want 100e18", got)
	}
}

// An executor that dies between storing a signed transaction and
// broadcasting it loses nothing and pays nothing twice: a fresh executor
// broadcasts the same bytes, and the nonce is used once.
func TestCrashAfterStoreRebroadcastsSameBytes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dest := randomAddress(t)
	const amount = 42_000
	id := f.addPayout(dest, amount, nil)

	crashed, _ := f.executor(nil)
	crashed.skipBroadcast = true
	res, err := crashed.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 1 || res.Broadcast != 0 {
		t.Fatalf("crashing pass %+v, want one signed and none broadcast", res)
	}
	stored := f.payout(id)
	if stored.Status != "sent" || len(stored.RawTx) == 0 || *stored.Nonce != 0 {
		t.Fatalf("stored payout %+v, want sent with raw_tx and nonce 0", stored)
	}
	if n, err := f.node.Client().PendingNonceAt(f.ctx, f.treasury); err != nil || n != 0 {
		t.Fatalf("treasury pending nonce %d, %v: the node saw a transaction that was never broadcast", n, err)
	}

	fresh, _ := f.executor(nil)
	res, err = fresh.RunOnce(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed != 0 || res.Rebroadcast != 1 {
		t.Fatalf("restart pass %+v, want the stored bytes re-broadcast and nothing signed", res)
	}
	f.runUntil(fresh, 10*time.Second, f.status(id))

	p := f.payout(id)
	if p.Status != "mined" || *p.TxHash != *stored.TxHash || !bytes.Equal(p.RawTx, stored.RawTx) || *p.Nonce != 0 || len(p.Prior) != 0 {
		t.Fatalf("after restart: %+v\nwant the stored transaction %s mined", p, *stored.TxHash)
	}
	r, err := f.node.Client().TransactionReceipt(f.ctx, common.HexToHash(*stored.TxHash))
	if err != nil || r.Status != 1 {
		t.Fatalf("receipt of the stored hash: %v, %v", r, err)
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
	if n := f.storedNonce(); n != 1 {
		t.Errorf("treasury_nonces.next_nonce %d, want 1", n)
	}
	// The crashed executor coming back finds nothing to do.
	if res, err := crashed.RunOnce(f.ctx); err != nil || res.Progress() {
		t.Errorf("old executor's pass: %+v, %v", res, err)
	}
}
