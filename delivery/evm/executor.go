package evm

import (
	"bytes"
	"context"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// artifacts are written by scripts/compile-contracts.sh (make contracts)
// and committed.
//
//go:embed contracts/*
var artifacts embed.FS

// DefaultCallGas is the gas a merchant call gets when the chain's config
// sets none: enough for a deposit into a vault or a swap, and the most a
// hostile destination can make the treasury burn per payout.
const DefaultCallGas = 500_000

type compiled struct {
	executor     abi.ABI
	runner       abi.ABI
	executorInit []byte
	executorCode []byte
	runnerInit   []byte
}

var load = sync.OnceValues(func() (*compiled, error) {
	read := func(name string) ([]byte, error) {
		b, err := artifacts.ReadFile("contracts/" + name)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		return b, nil
	}
	hexFile := func(name string) ([]byte, error) {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		out, err := hex.DecodeString(string(bytes.TrimSpace(b)))
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", name, err)
		}
		return out, nil
	}
	abiFile := func(name string) (abi.ABI, error) {
		b, err := read(name)
		if err != nil {
			return abi.ABI{}, err
		}
		a, err := abi.JSON(bytes.NewReader(b))
		if err != nil {
			return abi.ABI{}, fmt.Errorf("parsing %s: %w", name, err)
		}
		return a, nil
	}
	var c compiled
	var err error
	if c.executor, err = abiFile("SettleExecutor.abi"); err != nil {
		return nil, err
	}
	if c.runner, err = abiFile("PayoutRunner.abi"); err != nil {
		return nil, err
	}
	if c.executorInit, err = hexFile("SettleExecutor.bin"); err != nil {
		return nil, err
	}
	if c.executorCode, err = hexFile("SettleExecutor.bin-runtime"); err != nil {
		return nil, err
	}
	if c.runnerInit, err = hexFile("PayoutRunner.bin"); err != nil {
		return nil, err
	}
	return &c, nil
})

func mustLoad() *compiled {
	c, err := load()
	if err != nil {
		// The artifacts are embedded at build time: a failure here is a
		// broken build, not a runtime condition.
		panic(err)
	}
	return c
}

// Call is one payout's merchant call, exactly as the runner address commits
// to it.
type Call struct {
	// Key is the CREATE2 salt, unique per payout (see PayoutKey).
	Key     common.Hash
	Token   common.Address
	Amount  *big.Int
	Target  common.Address
	Data    []byte
	CallGas uint64
}

// DeployData is the creation transaction's data of an executor owned by
// treasury.
func DeployData(treasury common.Address) []byte {
	c := mustLoad()
	args, err := c.executor.Constructor.Inputs.Pack(treasury)
	if err != nil {
		panic(fmt.Sprintf("packing executor constructor: %v", err)) // an address always packs
	}
	return append(bytes.Clone(c.executorInit), args...)
}

// ExecuteData is the data of the treasury's execute transaction for call.
func ExecuteData(call Call) ([]byte, error) {
	data, err := mustLoad().executor.Pack("execute", call.Key, call.Token, call.Amount,
		call.Target, call.Data, new(big.Int).SetUint64(call.CallGas))
	if err != nil {
		return nil, fmt.Errorf("encoding execute: %w", err)
	}
	return data, nil
}

// RunnerAddress is where the treasury funds call before executing it on
// the executor at `executor`: the CREATE2 address of a PayoutRunner whose
// constructor arguments are the call and the treasury. It is computed
// here rather than asked of the chain, and Verify makes sure the deployed
// executor computes the same.
func RunnerAddress(executor, treasury common.Address, call Call) (common.Address, error) {
	c := mustLoad()
	args, err := c.runner.Constructor.Inputs.Pack(call.Token, call.Amount, call.Target, call.Data,
		new(big.Int).SetUint64(call.CallGas), treasury)
	if err != nil {
		return common.Address{}, fmt.Errorf("encoding runner arguments: %w", err)
	}
	init := append(bytes.Clone(c.runnerInit), args...)
	return crypto.CreateAddress2(executor, call.Key, crypto.Keccak256(init)), nil
}

// PayoutKey is the runner salt of a payout: the session id (random) keeps
// it unique across databases that share a treasury and executor, so a
// reset database can never fund a runner address that was already used.
func PayoutKey(sessionID, kind string, payoutID int64) common.Hash {
	return crypto.Keccak256Hash([]byte(fmt.Sprintf("settle-payout:%s:%s:%d", sessionID, kind, payoutID)))
}

// Caller is what Verify needs of a node.
type Caller interface {
	CodeAt(ctx context.Context, account common.Address, block *big.Int) ([]byte, error)
	CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error)
}

// Verify checks that the contract at executor is this build's
// SettleExecutor, byte for byte, owned by treasury. Anything else at that
// address (a typo in the config, an older build, a contract of someone
// else's) could send the treasury's funds anywhere, so it is refused.
func Verify(ctx context.Context, node Caller, executor, treasury common.Address) error {
	c := mustLoad()
	code, err := node.CodeAt(ctx, executor, nil)
	if err != nil {
		return fmt.Errorf("reading code of executor %s: %w", executor.Hex(), err)
	}
	if len(code) == 0 {
		return fmt.Errorf("executor %s has no code on this chain (run `settle delivery deploy`)", executor.Hex())
	}
	if !bytes.Equal(code, c.executorCode) {
		return fmt.Errorf("the contract at executor %s is not this build's SettleExecutor (code hash %s, want %s)",
			executor.Hex(), crypto.Keccak256Hash(code).Hex(), crypto.Keccak256Hash(c.executorCode).Hex())
	}
	data, _ := c.executor.Pack("treasury")
	out, err := node.CallContract(ctx, ethereum.CallMsg{To: &executor, Data: data}, nil)
	if err != nil {
		return fmt.Errorf("reading treasury of executor %s: %w", executor.Hex(), err)
	}
	if len(out) != 32 || common.BytesToAddress(out) != treasury {
		return fmt.Errorf("executor %s belongs to treasury %s, not %s", executor.Hex(), common.BytesToAddress(out).Hex(), treasury.Hex())
	}
	return nil
}

// Executed is what a runner reports in its receipt.
type Executed struct {
	// Success: the merchant's call did not revert.
	Success bool
	// Delivered: token units that left the runner during the call.
	Delivered *big.Int
	// Returned: token units sent back to the treasury.
	Returned *big.Int
	// Result: the first 256 bytes of the call's return or revert data.
	Result []byte
}

// ErrNoExecuted means a receipt has no Executed event of the runner.
var ErrNoExecuted = errors.New("receipt has no Executed event of the payout's runner")

// ParseExecuted finds runner's Executed event in r.
func ParseExecuted(r *types.Receipt, runner common.Address) (Executed, error) {
	c := mustLoad()
	ev := c.runner.Events["Executed"]
	for _, l := range r.Logs {
		if l.Address != runner || len(l.Topics) == 0 || l.Topics[0] != ev.ID {
			continue
		}
		vals, err := ev.Inputs.Unpack(l.Data)
		if err != nil || len(vals) != 4 {
			return Executed{}, fmt.Errorf("decoding Executed of runner %s: %v", runner.Hex(), err)
		}
		out := Executed{}
		var ok1, ok2, ok3, ok4 bool
		out.Success, ok1 = vals[0].(bool)
		out.Delivered, ok2 = vals[1].(*big.Int)
		out.Returned, ok3 = vals[2].(*big.Int)
		out.Result, ok4 = vals[3].([]byte)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return Executed{}, fmt.Errorf("decoding Executed of runner %s: unexpected types", runner.Hex())
		}
		return out, nil
	}
	return Executed{}, ErrNoExecuted
}

// Reason renders a call's revert data for people: the string of an
// Error(string), the code of a Panic(uint256), else the hex.
func Reason(result []byte) string {
	if len(result) == 0 {
		return "no revert data"
	}
	if s, err := abi.UnpackRevert(result); err == nil {
		return s
	}
	if len(result) >= 4 {
		return "custom error 0x" + hex.EncodeToString(result[:4]) + " (data 0x" + hex.EncodeToString(result) + ")"
	}
	return "data 0x" + strings.ToLower(hex.EncodeToString(result))
}
