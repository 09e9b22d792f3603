package evm_test

import (
	"bytes"
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
)

// The runner address settle funds must be the one the deployed executor
// will deploy to: computed here from the embedded code, and asked of the
// contract on chain, for calls of every shape.
func TestRunnerAddressMatchesTheContract(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := anviltest.Start(t, anvil.Config{})
	treasury := anvil.DevAddress(3)
	executor, err := node.DeployCode(ctx, anvil.DevKeys[0], evm.DeployData(treasury))
	if err != nil {
		t.Fatal(err)
	}
	if err := evm.Verify(ctx, node.Client(), executor, treasury); err != nil {
		t.Fatalf("Verify of a fresh executor: %v", err)
	}
	exABI, err := abi.JSON(strings.NewReader(`[{"type":"function","name":"runnerAddress","stateMutability":"view",
		"inputs":[{"type":"bytes32"},{"type":"address"},{"type":"uint256"},{"type":"address"},{"type":"bytes"},{"type":"uint256"}],
		"outputs":[{"type":"address"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	calls := []evm.Call{
		{Key: evm.PayoutKey("s1", "delivery", 1), Token: anvil.DevAddress(5), Amount: big.NewInt(1), Target: anvil.DevAddress(6), Data: []byte{}, CallGas: 1},
		{Key: evm.PayoutKey("s2", "delivery", 2), Token: anvil.DevAddress(5), Amount: new(big.Int).Lsh(big.NewInt(1), 200),
			Target: anvil.DevAddress(6), Data: bytes.Repeat([]byte{0xab}, 1000), CallGas: evm.DefaultCallGas},
	}
	seen := map[common.Address]bool{}
	for _, c := range calls {
		local, err := evm.RunnerAddress(executor, treasury, c)
		if err != nil {
			t.Fatal(err)
		}
		data, err := exABI.Pack("runnerAddress", c.Key, c.Token, c.Amount, c.Target, c.Data, new(big.Int).SetUint64(c.CallGas))
		if err != nil {
			t.Fatal(err)
		}
		out, err := node.Client().CallContract(ctx, ethereum.CallMsg{To: &executor, Data: data}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if onChain := common.BytesToAddress(out); onChain != local {
			t.Errorf("runner address: local %s, contract %s", local, onChain)
		}
		seen[local] = true
	}
	// Every argument is committed to: change any one and the address moves.
	base := calls[1]
	variants := []func(c *evm.Call){
		func(c *evm.Call) { c.Key = evm.PayoutKey("s2", "refund", 2) },
		func(c *evm.Call) { c.Token = anvil.DevAddress(7) },
		func(c *evm.Call) { c.Amount = new(big.Int).Add(c.Amount, big.NewInt(1)) },
		func(c *evm.Call) { c.Target = anvil.DevAddress(7) },
		func(c *evm.Call) { c.Data = append(bytes.Clone(c.Data), 0) },
		func(c *evm.Call) { c.CallGas++ },
	}
	for i, v := range variants {
		c := base
		v(&c)
		a, err := evm.RunnerAddress(executor, treasury, c)
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Errorf("variant %d shares a runner address", i)
		}
		seen[a] = true
	}
	if a, _ := evm.RunnerAddress(executor, anvil.DevAddress(4), base); seen[a] {
		t.Error("another treasury's runner shares an address")
	}
}

// Verify refuses what could send the treasury's funds elsewhere: no code,
// other code, or an executor of another treasury.
func TestVerifyRefusesOtherContracts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := anviltest.Start(t, anvil.Config{})
	treasury := anvil.DevAddress(3)
	other, err := node.DeployCode(ctx, anvil.DevKeys[0], evm.DeployData(anvil.DevAddress(4)))
	if err != nil {
		t.Fatal(err)
	}
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "T", "T", 6)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   common.Address
		want string
	}{
		{anvil.DevAddress(8), "has no code"},
		{token, "not this build's SettleExecutor"},
		{other, "belongs to treasury"},
	} {
		if err := evm.Verify(ctx, node.Client(), c.at, treasury); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Verify(%s) = %v, want an error with %q", c.at, err, c.want)
		}
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	errString, _ := abi.NewType("string", "", nil)
	packed, _ := abi.Arguments{{Type: errString}}.Pack("merchant refuses")
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{nil, "no revert data"},
		{append([]byte{0x08, 0xc3, 0x79, 0xa0}, packed...), "merchant refuses"},
		{[]byte{0xde, 0xad, 0xbe, 0xef, 1}, "custom error 0xdeadbeef (data 0xdeadbeef01)"},
		{[]byte{1, 2}, "data 0x0102"},
	} {
		if got := evm.Reason(c.in); got != c.want {
			t.Errorf("Reason(%x) = %q, want %q", c.in, got, c.want)
		}
	}
}
