package anvil

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"embed"
	"encoding/hex"
	"fmt"
	"math/big"
	"sync"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// contractFiles holds <Name>.abi and <Name>.bin for each contract in the
// repo's contracts/ directory, written by scripts/compile-contracts.sh.
//
//go:embed contracts/*
var contractFiles embed.FS

// Names of the embedded contracts.
const (
	testTokenName    = "TestToken"
	benchTokenName   = "BenchToken"
	testNFTName      = "TestNFT"
	testMerchantName = "TestMerchant"
	testAttackerName = "TestAttacker"
)

type contract struct {
	abi abi.ABI
	bin []byte
}

var loadContracts = sync.OnceValues(func() (map[string]*contract, error) {
	out := make(map[string]*contract)
	for _, name := range []string{testTokenName, benchTokenName, testNFTName, testMerchantName, testAttackerName} {
		abiJSON, err := contractFiles.ReadFile("contracts/" + name + ".abi")
		if err != nil {
			return nil, fmt.Errorf("reading %s abi: %w", name, err)
		}
		parsed, err := abi.JSON(bytes.NewReader(abiJSON))
		if err != nil {
			return nil, fmt.Errorf("parsing %s abi: %w", name, err)
		}
		binHex, err := contractFiles.ReadFile("contracts/" + name + ".bin")
		if err != nil {
			return nil, fmt.Errorf("reading %s bytecode: %w", name, err)
		}
		bin, err := hex.DecodeString(string(bytes.TrimSpace(binHex)))
		if err != nil {
			return nil, fmt.Errorf("decoding %s bytecode: %w", name, err)
		}
		out[name] = &contract{abi: parsed, bin: bin}
	}
	return out, nil
})

func getContract(name string) (*contract, error) {
	all, err := loadContracts()
	if err != nil {
		return nil, err
	}
	return all[name], nil
}

// pack encodes a call of method on the named contract.
func pack(name, method string, args ...any) ([]byte, error) {
	c, err := getContract(name)
	if err != nil {
		return nil, err
	}
	data, err := c.abi.Pack(method, args...)
	if err != nil {
		return nil, fmt.Errorf("encoding %s.%s: %w", name, method, err)
	}
	return data, nil
}

// deployData is the named contract's init code followed by its encoded
// constructor arguments.
func deployData(name string, args ...any) ([]byte, error) {
	c, err := getContract(name)
	if err != nil {
		return nil, err
	}
	ctorArgs, err := c.abi.Pack("", args...)
	if err != nil {
		return nil, fmt.Errorf("encoding %s constructor: %w", name, err)
	}
	return append(bytes.Clone(c.bin), ctorArgs...), nil
}

func (n *Node) deploy(ctx context.Context, key *ecdsa.PrivateKey, name string, args ...any) (common.Address, error) {
	data, err := deployData(name, args...)
	if err != nil {
		return common.Address{}, err
	}
	r, err := n.transact(ctx, key, nil, data)
	if err != nil {
		return common.Address{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	return r.ContractAddress, nil
}

func (n *Node) call(ctx context.Context, key *ecdsa.PrivateKey, name string, at common.Address, method string, args ...any) (*types.Receipt, error) {
	data, err := pack(name, method, args...)
	if err != nil {
		return nil, err
	}
	r, err := n.transact(ctx, key, &at, data)
	if err != nil {
		return r, fmt.Errorf("%s.%s on %s: %w", name, method, at, err)
	}
	return r, nil
}

// DeployTestToken deploys an ERC-20 whose mint is open to anyone and waits
// for it to be mined. From a fresh node's account 0 the first deployment
// lands at 0x5FbDB2315678afecb367f032d93F642f64180aa3.
func (n *Node) DeployTestToken(ctx context.Context, key *ecdsa.PrivateKey, name, symbol string, decimals uint8) (common.Address, error) {
	return n.deploy(ctx, key, testTokenName, name, symbol, decimals)
}

// DeployBenchToken deploys BenchToken with supply minted to key's account
// and waits for it to be mined.
func (n *Node) DeployBenchToken(ctx context.Context, key *ecdsa.PrivateKey, supply *big.Int) (common.Address, error) {
	return n.deploy(ctx, key, benchTokenName, supply)
}

// DeployTestNFT deploys the ERC-721-style TestNFT and waits for it to be
// mined.
func (n *Node) DeployTestNFT(ctx context.Context, key *ecdsa.PrivateKey) (common.Address, error) {
	return n.deploy(ctx, key, testNFTName)
}

// DeployTestMerchant deploys TestMerchant, the destination contract for
// deliveries with calldata, and waits for it to be mined. A payer approves
// it on the token (ApproveCalldata) and then calls it with
// MerchantDepositCalldata, which pulls the amount, or
// MerchantRevertCalldata, which always reverts.
func (n *Node) DeployTestMerchant(ctx context.Context, key *ecdsa.PrivateKey) (common.Address, error) {
	return n.deploy(ctx, key, testMerchantName)
}

// DeployTestAttacker deploys TestAttacker, the hostile destination of the
// delivery attack suite; what it takes goes to thief.
func (n *Node) DeployTestAttacker(ctx context.Context, key *ecdsa.PrivateKey, thief common.Address) (common.Address, error) {
	return n.deploy(ctx, key, testAttackerName, thief)
}

// AttackerCalldata encodes a call of one of TestAttacker's methods (pull,
// pullThenRevert, takePart, takeNothing, reenter, burnGas, destroy).
func AttackerCalldata(method string, args ...any) ([]byte, error) {
	return pack(testAttackerName, method, args...)
}

// AttackerCall sends a TestAttacker method call from key and waits for the
// receipt.
func (n *Node) AttackerCall(ctx context.Context, key *ecdsa.PrivateKey, attacker common.Address, method string, args ...any) (*types.Receipt, error) {
	return n.call(ctx, key, testAttackerName, attacker, method, args...)
}

// AttackerReentered reads TestAttacker.reentered: whether a re-entrant
// call made from reenter succeeded.
func (n *Node) AttackerReentered(ctx context.Context, attacker common.Address) (bool, error) {
	v, err := n.callUint256(ctx, testAttackerName, attacker, "reentered")
	if err != nil {
		return false, err
	}
	return v.Sign() != 0, nil
}

// DeployCode sends a contract creation with init code data from key and
// waits for it: for contracts whose code lives outside this package, such
// as the production SettleExecutor.
func (n *Node) DeployCode(ctx context.Context, key *ecdsa.PrivateKey, data []byte) (common.Address, error) {
	r, err := n.transact(ctx, key, nil, data)
	if err != nil {
		return common.Address{}, fmt.Errorf("deploying contract: %w", err)
	}
	return r.ContractAddress, nil
}

// MerchantDepositCalldata encodes TestMerchant.deposit(token, amount,
// orderID): the merchant pulls amount of token from the caller with
// transferFrom (one Transfer from caller to merchant, so the caller must
// have approved at least amount), adds it to paid[orderID] and emits
// Deposited(orderID, token, caller, amount).
func MerchantDepositCalldata(token common.Address, amount *big.Int, orderID [32]byte) ([]byte, error) {
	return pack(testMerchantName, "deposit", token, amount, orderID)
}

// MerchantRevertCalldata encodes TestMerchant.depositOrRevert(token, amount,
// orderID), which takes deposit's arguments and always reverts with
// "merchant refuses". Gas estimation fails on it, so send it with SendTxGas
// to get a mined transaction with status 0.
func MerchantRevertCalldata(token common.Address, amount *big.Int, orderID [32]byte) ([]byte, error) {
	return pack(testMerchantName, "depositOrRevert", token, amount, orderID)
}

// MerchantPaid reads TestMerchant's paid[orderID], the sum deposited for
// the order, at the latest block.
func (n *Node) MerchantPaid(ctx context.Context, merchant common.Address, orderID [32]byte) (*big.Int, error) {
	return n.callUint256(ctx, testMerchantName, merchant, "paid", orderID)
}

// TransferCalldata encodes an ERC-20 transfer(to, amount), for sending
// through SendTx or SendTxGas.
func TransferCalldata(to common.Address, amount *big.Int) ([]byte, error) {
	return pack(testTokenName, "transfer", to, amount)
}

// ApproveCalldata encodes an ERC-20 approve(spender, amount), for sending
// through SendTx or SendTxGas.
func ApproveCalldata(spender common.Address, amount *big.Int) ([]byte, error) {
	return pack(testTokenName, "approve", spender, amount)
}

// Mint creates amount TestToken units for to (one Transfer from the zero
// address) and waits for the receipt.
func (n *Node) Mint(ctx context.Context, key *ecdsa.PrivateKey, token, to common.Address, amount *big.Int) (*types.Receipt, error) {
	return n.call(ctx, key, testTokenName, token, "mint", to, amount)
}

// Transfer sends amount of an ERC-20 (TestToken or BenchToken) from key's
// account to `to` and waits for the receipt.
func (n *Node) Transfer(ctx context.Context, key *ecdsa.PrivateKey, token, to common.Address, amount *big.Int) (*types.Receipt, error) {
	return n.call(ctx, key, testTokenName, token, "transfer", to, amount)
}

// BatchTransfer sends amounts[i] TestToken units to tos[i] from key's
// account in one transaction, emitting one Transfer per pair, and waits for
// the receipt.
func (n *Node) BatchTransfer(ctx context.Context, key *ecdsa.PrivateKey, token common.Address, tos []common.Address, amounts []*big.Int) (*types.Receipt, error) {
	if len(tos) != len(amounts) {
		return nil, fmt.Errorf("batch transfer: %d recipients but %d amounts", len(tos), len(amounts))
	}
	return n.call(ctx, key, testTokenName, token, "batchTransfer", tos, amounts)
}

// MintNFT mints TestNFT token id to `to`. Its Transfer log has four topics
// and no data, unlike an ERC-20 Transfer with the same signature hash.
func (n *Node) MintNFT(ctx context.Context, key *ecdsa.PrivateKey, nft, to common.Address, id *big.Int) (*types.Receipt, error) {
	return n.call(ctx, key, testNFTName, nft, "mint", to, id)
}

// BalanceOf reads an ERC-20 balance at the latest block.
func (n *Node) BalanceOf(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	return n.callUint256(ctx, testTokenName, token, "balanceOf", owner)
}

// callUint256 runs a view method of the named contract that returns one
// uint256 (eth_call at the latest block).
func (n *Node) callUint256(ctx context.Context, name string, at common.Address, method string, args ...any) (*big.Int, error) {
	data, err := pack(name, method, args...)
	if err != nil {
		return nil, err
	}
	out, err := n.client.CallContract(ctx, ethereum.CallMsg{To: &at, Data: data}, nil)
	if err != nil {
		return nil, fmt.Errorf("calling %s on %s: %w", method, at, err)
	}
	if len(out) != 32 {
		return nil, fmt.Errorf("%s on %s returned %d bytes, want 32", method, at, len(out))
	}
	return new(big.Int).SetBytes(out), nil
}
