package delivery

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/anvil"
)

// The attack suite of issue 7: hostile merchant calldata against the
// delivery executor. The invariant under attack: the code that runs
// merchant calldata can reach at most the funds of the payout it executes
// (nothing of the treasury's, no other payout's, no standing allowance),
// and a payout is either delivered or returned in one transaction, never
// both. Each case checks the treasury's token balance and allowances, the
// runner, a bystander runner's funds, what the thief got and the payout's
// end state (mined: the session succeeds with what was delivered;
// reverted: the whole amount is back and the session is refunded).
func TestAttacks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	e, _ := f.executor(nil)
	thiefKey := anvil.DevKeys[7]
	thief := anvil.DevAddress(7)
	attacker, err := f.node.DeployTestAttacker(f.ctx, anvil.DevKeys[0], thief)
	if err != nil {
		t.Fatal(err)
	}
	// A bystander: funds sitting at another payout's runner address,
	// funded but not executed yet. No attack may touch them.
	bystander, err := evm.RunnerAddress(f.executorAddr, f.treasury, evm.Call{Key: common.Hash{0xb7}, Token: f.token,
		Amount: big.NewInt(9_000_000), Target: attacker, Data: []byte{1}, CallGas: evm.DefaultCallGas})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Mint(f.ctx, anvil.DevKeys[0], f.token, bystander, big.NewInt(9_000_000)); err != nil {
		t.Fatal(err)
	}
	pack := func(method string, args ...any) []byte {
		t.Helper()
		data, err := anvil.AttackerCalldata(method, args...)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	const amount = 1_000_000
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	reenterExecute, err := evm.ExecuteData(evm.Call{Key: common.Hash{0xee}, Token: f.token, Amount: big.NewInt(9_000_000),
		Target: attacker, Data: []byte{1}, CallGas: evm.DefaultCallGas})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		target common.Address
		data   []byte
		// status is the payout's end state; delivered what left the
		// treasury for good; stolen what the thief holds after the case
		// (on top of before).
		status    string
		delivered int64
		stolen    int64
		reason    string
		// between runs after the funding is mined, before the execute.
		between func(t *testing.T, runner common.Address)
	}{
		{name: "token transfer for more than the payout (the issue's drain)", target: f.token,
			data: transferData(thief, big.NewInt(500_000_000_000)), status: "reverted", reason: "insufficient balance"},
		{name: "token transfer of the treasury's funds with transferFrom", target: f.token,
			data:   concat(selector("transferFrom(address,address,uint256)"), addressWord(f.treasury), addressWord(thief), uintWord(big.NewInt(amount))),
			status: "reverted", reason: "allowance"},
		{name: "approve of an attacker", target: f.token, data: approveData(thief, max), status: "reverted", reason: "took nothing",
			between: nil},
		{name: "re-entry into the executor", target: attacker, data: pack("reenter", f.token, f.executorAddr, reenterExecute),
			status: "mined", delivered: amount, stolen: amount},
		{name: "pull, then revert (and a separate pull between funding and execute)", target: attacker, data: pack("pullThenRevert", f.token),
			status: "reverted", reason: "took it and refused",
			between: func(t *testing.T, runner common.Address) {
				for _, from := range []common.Address{runner, f.treasury} {
					if _, err := f.node.AttackerCall(f.ctx, thiefKey, attacker, "pull", f.token, from); err != nil {
						t.Fatalf("pull from %s: %v", from, err)
					}
				}
			}},
		{name: "a call that takes only part", target: attacker, data: pack("takePart", f.token, big.NewInt(amount/4)),
			status: "mined", delivered: amount / 4, stolen: amount / 4},
		{name: "a call that takes nothing", target: attacker, data: pack("takeNothing"), status: "reverted", reason: "took nothing"},
		{name: "a destination that self-destructs", target: attacker, data: pack("destroy", f.token),
			status: "mined", delivered: amount, stolen: amount},
		{name: "a destination that is not a contract", target: thief, data: pack("takeNothing"), status: "reverted", reason: "took nothing"},
		{name: "a call that burns all gas", target: attacker, data: pack("burnGas"), status: "reverted", reason: "no revert data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			treasuryBefore, thiefBefore := f.balance(f.treasury), f.balance(thief)
			gasBefore, err := f.node.Client().BalanceAt(f.ctx, f.treasury, nil)
			if err != nil {
				t.Fatal(err)
			}
			id := f.addPayout(c.target, amount, c.data)
			if c.between != nil {
				f.runUntil(e, 20*time.Second, func() bool { p := f.payout(id); return p.FundHash != nil })
				runner := common.HexToAddress(*f.payout(id).Runner)
				if r, err := f.node.WaitReceipt(f.ctx, common.HexToHash(*f.payout(id).FundHash)); err != nil || r.Status != types.ReceiptStatusSuccessful {
					t.Fatalf("funding: %v", err)
				}
				c.between(t, runner)
				if got := f.balance(runner); got.Int64() != amount {
					t.Fatalf("runner holds %s after the attack between funding and execute, want %d", got, amount)
				}
			}
			f.runUntil(e, 30*time.Second, f.status(id))
			p := f.payout(id)
			if p.Status != c.status {
				t.Fatalf("payout %s (%s), want %s", p.Status, deref(p.Error), c.status)
			}
			if c.reason != "" && (p.Error == nil || !strings.Contains(*p.Error, c.reason)) {
				t.Errorf("reason %q, want it to mention %q", deref(p.Error), c.reason)
			}
			runner := common.HexToAddress(*p.Runner)
			if lost := new(big.Int).Sub(treasuryBefore, f.balance(f.treasury)); lost.Int64() != c.delivered {
				t.Errorf("treasury lost %s units, want %d", lost, c.delivered)
			}
			if got := new(big.Int).Sub(f.balance(thief), thiefBefore); got.Int64() != c.stolen {
				t.Errorf("thief got %s units, want %d", got, c.stolen)
			}
			if got := f.balance(runner); got.Sign() != 0 {
				t.Errorf("runner holds %s, want 0", got)
			}
			if got := f.balance(bystander); got.Int64() != 9_000_000 {
				t.Errorf("bystander runner holds %s, want 9000000", got)
			}
			for _, spender := range []common.Address{thief, attacker, f.token, f.executorAddr, runner} {
				if got := f.allowanceAt(f.treasury, spender, nil); got.Sign() != 0 {
					t.Errorf("treasury's allowance to %s is %s, want 0", spender, got)
				}
			}
			if got := f.allowanceAt(runner, c.target, nil); got.Sign() != 0 {
				t.Errorf("runner's allowance to the destination is %s, want 0", got)
			}
			// Whatever the call did, nobody can act as the runner later.
			if code, err := f.node.Client().CodeAt(f.ctx, runner, nil); err != nil || len(code) != 0 {
				t.Errorf("runner has code %x (%v)", code, err)
			}
			if _, err := f.node.AttackerCall(f.ctx, thiefKey, attacker, "pull", f.token, runner); err != nil {
				t.Errorf("a later pull from the runner: %v", err)
			}
			if got := f.balance(runner); got.Sign() != 0 {
				t.Errorf("runner holds %s after a later pull", got)
			}
			if ok, err := f.node.AttackerReentered(f.ctx, attacker); err != nil || ok {
				t.Errorf("re-entry succeeded: %v %v", ok, err)
			}
			// Gas is bounded: the merchant call gets CallGas, no more.
			gasAfter, err := f.node.Client().BalanceAt(f.ctx, f.treasury, nil)
			if err != nil {
				t.Fatal(err)
			}
			exec, err := decodeTx(p.RawTx)
			if err != nil {
				t.Fatal(err)
			}
			r, err := f.node.Client().TransactionReceipt(f.ctx, exec.Hash())
			if err != nil {
				t.Fatal(err)
			}
			if limit := uint64(evm.DefaultCallGas + 200_000); r.GasUsed > limit {
				t.Errorf("execute used %d gas, want at most %d", r.GasUsed, limit)
			}
			t.Logf("execute gas used %d; treasury spent %s wei of gas in all", r.GasUsed, new(big.Int).Sub(gasBefore, gasAfter))
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
