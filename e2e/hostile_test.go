package e2e

import (
	"context"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/settle-dev/settle/docs/finance"
	"github.com/settle-dev/settle/internal/anvil"
)

// Issue 7's drain through the whole stack: a session whose destination is
// the USDC contract itself with calldata transfer(0x…dead, 500000e6) and
// no amount, paid 0.000001 USDC. The runner holds 1 unit, so the transfer
// reverts inside it; the session bounces with exactly that unit refunded,
// and the treasury loses nothing else. A call that takes part of the
// amount succeeds with what it took (not with what a fake Transfer log of
// its own claims); the rest is back in the treasury and on the ledger as a
// call_returned exception.
func TestHostileCalldataThroughTheStack(t *testing.T) {
	s := newStack(t, options{})
	ctx := context.Background()
	treasury := crypto.PubkeyToAddress(s.treasury.PublicKey)
	dead := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	drain, err := anvil.TransferCalldata(dead, big.NewInt(500_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	thief := anvil.DevAddress(6)
	attacker, err := s.b.DeployTestAttacker(ctx, anvil.DevKeys[0], thief)
	if err != nil {
		t.Fatal(err)
	}
	// It takes 2 USDC and logs a fake Transfer of 10^30 from the runner.
	part, err := anvil.AttackerCalldata("takePartAndLie", s.usdcB, big.NewInt(2_000_000), new(big.Int).Exp(big.NewInt(10), big.NewInt(30), nil))
	if err != nil {
		t.Fatal(err)
	}
	treasuryB := s.balance(s.b, s.usdcB, treasury)

	drainDest := evmDest(chainB, s.usdcB, s.usdcB, "")
	drainDest["calldata"] = "0x" + common.Bytes2Hex(drain)
	payer := anvil.DevAddress(payerKey)
	idDrain, _, recvDrain := s.session(drainDest, nil)
	partDest := evmDest(chainB, s.usdcB, attacker, "5")
	partDest["calldata"] = "0x" + common.Bytes2Hex(part)
	idPart, _, recvPart := s.session(partDest, nil)
	payerBefore := s.balance(s.a, s.usdcA, payer)
	s.pay(s.a, s.usdcA, recvDrain, 1)
	s.pay(s.a, s.usdcA, recvPart, 5_000_000)

	sess := s.waitStatus(idDrain, "bounced", 90*time.Second)
	if got := s.balance(s.b, s.usdcB, dead); got.Sign() != 0 {
		t.Errorf("0x…dead holds %s units", got)
	}
	delivery := sess["destination"].(map[string]any)["delivery"].(map[string]any)
	if delivery["receivedUnits"] != "0.000001" {
		t.Errorf("refund %v, want 0.000001", delivery)
	}
	sess = s.waitStatus(idPart, "succeeded", 90*time.Second)
	delivery = sess["destination"].(map[string]any)["delivery"].(map[string]any)
	if delivery["receivedUnits"] != "2" {
		t.Errorf("partial delivery %v, want receivedUnits 2", delivery)
	}
	if got := s.balance(s.b, s.usdcB, thief); got.Int64() != 2_000_000 {
		t.Errorf("the destination took %s, want 2000000", got)
	}
	// Chain B's treasury paid out only what the partial call took.
	if lost := new(big.Int).Sub(treasuryB, s.balance(s.b, s.usdcB, treasury)); lost.Int64() != 2_000_000 {
		t.Errorf("treasury on chain B lost %s, want 2000000", lost)
	}
	// The payer got the drain session's unit back on chain A.
	if got := new(big.Int).Sub(payerBefore, s.balance(s.a, s.usdcA, payer)); got.Int64() != 5_000_000 {
		t.Errorf("payer is down %s on chain A, want 5000000 (the drain's 1 unit refunded)", got)
	}
	want := []string{"delivery 2000000", "deposit 5000000", "exception call_returned 3000000"}
	if got := s.ledger(idPart, len(want)); !slices.Equal(got, want) {
		t.Errorf("ledger of the partial session %q, want %q", got, want)
	}
}

// A paid session's deposit is swept from its receiver into the treasury
// once final, and the statement shows where the money is: all of it swept,
// none left in the receiver, and what the sweep's gas cost.
func TestSweepStatement(t *testing.T) {
	s := newStack(t, options{sweep: true})
	ctx := context.Background()
	treasury := crypto.PubkeyToAddress(s.treasury.PublicKey)
	id, _, recv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(7), "20"), nil)
	before := s.balance(s.a, s.usdcA, treasury)
	s.pay(s.a, s.usdcA, recv, 20_000_000)
	s.waitStatus(id, "succeeded", 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for s.balance(s.a, s.usdcA, recv).Sign() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("receiver still holds %s", s.balance(s.a, s.usdcA, recv))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := new(big.Int).Sub(s.balance(s.a, s.usdcA, treasury), before); got.Int64() != 20_000_000 {
		t.Errorf("treasury on chain A gained %s, want the 20000000 swept", got)
	}
	e12 := decimal.New(1, 12)
	for {
		var sid string
		var in, delivered, refunded, held, variance, swept, inReceiver, sweepGas decimal.Decimal
		var wrongToken int64
		err := s.db.CH.QueryRow(ctx, strings.ReplaceAll(finance.SessionStatement, "SESSION_ID", id)).
			Scan(&sid, &in, &delivered, &refunded, &held, &variance, &swept, &inReceiver, &sweepGas, &wrongToken)
		// sweep and sweep_gas sit in two partitions, which one insert
		// does not make visible at once.
		if err == nil && swept.Equal(decimal.NewFromInt(20_000_000).Mul(e12)) && sweepGas.IsPositive() {
			if !in.Equal(swept) || !inReceiver.IsZero() || !delivered.Equal(in) || !variance.IsZero() {
				t.Errorf("statement: in %s delivered %s variance %s swept %s in receiver %s sweep gas %s", in, delivered, variance, swept, inReceiver, sweepGas)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statement never showed the sweep: swept %s (%v)", swept, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
