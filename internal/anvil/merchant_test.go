package anvil

import (
	"context"
	"crypto/ecdsa"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// depositedTopic is topic 0 of TestMerchant's Deposited event.
var depositedTopic = crypto.Keccak256Hash([]byte("Deposited(bytes32,address,address,uint256)"))

// sendAndWait submits data from key to `to` with SendTxGas and returns the
// mined receipt, whatever its status.
func sendAndWait(t *testing.T, ctx context.Context, n *Node, key *ecdsa.PrivateKey, to common.Address, data []byte, gas uint64) *types.Receipt {
	t.Helper()
	hash, err := n.SendTxGas(ctx, key, &to, data, gas)
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.WaitReceipt(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMerchantDeposit(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx := testCtx(t)
	token, err := n.DeployTestToken(ctx, DevKeys[0], "Test USD", "TUSD", 6)
	if err != nil {
		t.Fatal(err)
	}
	merchant, err := n.DeployTestMerchant(ctx, DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	payerKey, payer := DevKeys[3], DevAddress(3)
	if _, err := n.Mint(ctx, DevKeys[0], token, payer, big.NewInt(10_000_000)); err != nil {
		t.Fatal(err)
	}
	order := [32]byte{0: 0xab, 31: 0x01}
	amount := big.NewInt(2_500_000)

	approve, err := ApproveCalldata(merchant, amount)
	if err != nil {
		t.Fatal(err)
	}
	if r := sendAndWait(t, ctx, n, payerKey, token, approve, 0); r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("approve status %d", r.Status)
	}
	deposit, err := MerchantDepositCalldata(token, amount, order)
	if err != nil {
		t.Fatal(err)
	}
	// Through SendTx proper: gas is estimated.
	hash, err := n.SendTx(ctx, payerKey, &merchant, deposit)
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.WaitReceipt(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("deposit status %d, want 1", r.Status)
	}
	var transfers, deposited int
	for _, l := range r.Logs {
		switch {
		case len(l.Topics) > 0 && l.Topics[0] == TransferTopic:
			transfers++
			if l.Address != token || len(l.Topics) != 3 || len(l.Data) != 32 {
				t.Fatalf("Transfer log %+v is not an ERC-20 Transfer from %s", l, token)
			}
			from, to := common.BytesToAddress(l.Topics[1][:]), common.BytesToAddress(l.Topics[2][:])
			if from != payer || to != merchant || new(big.Int).SetBytes(l.Data).Cmp(amount) != 0 {
				t.Errorf("Transfer %s -> %s of %d, want %s -> %s of %s", from, to, new(big.Int).SetBytes(l.Data), payer, merchant, amount)
			}
		case len(l.Topics) > 0 && l.Topics[0] == depositedTopic:
			deposited++
			want := []common.Hash{depositedTopic, order, common.BytesToHash(token[:]), common.BytesToHash(payer[:])}
			if l.Address != merchant || len(l.Topics) != 4 || new(big.Int).SetBytes(l.Data).Cmp(amount) != 0 {
				t.Errorf("Deposited log %+v, want from %s with amount %s", l, merchant, amount)
			} else {
				for i := range want {
					if l.Topics[i] != want[i] {
						t.Errorf("Deposited topic %d = %s, want %s", i, l.Topics[i], want[i])
					}
				}
			}
		default:
			t.Errorf("unexpected log %+v", l)
		}
	}
	if transfers != 1 || deposited != 1 {
		t.Errorf("deposit logged %d Transfers and %d Deposited, want 1 and 1", transfers, deposited)
	}
	checkBalances(t, ctx, n, token, map[common.Address]int64{merchant: 2_500_000, payer: 7_500_000})
	if paid, err := n.MerchantPaid(ctx, merchant, order); err != nil || paid.Cmp(amount) != 0 {
		t.Errorf("paid[order] = %v, %v; want %s", paid, err, amount)
	}
	if paid, err := n.MerchantPaid(ctx, merchant, [32]byte{1}); err != nil || paid.Sign() != 0 {
		t.Errorf("paid[other order] = %v, %v; want 0", paid, err)
	}

	// The allowance is used up: a second deposit reverts in estimation.
	if _, err := n.SendTx(ctx, payerKey, &merchant, deposit); err == nil || !strings.Contains(err.Error(), "insufficient allowance") {
		t.Errorf("deposit without allowance: %v, want an estimation error quoting the revert", err)
	}

	// A bounce: approved, but the merchant refuses. SendTx cannot send it
	// (estimation reverts); SendTxGas mines it with status 0.
	if r := sendAndWait(t, ctx, n, payerKey, token, approve, 0); r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("second approve status %d", r.Status)
	}
	refuse, err := MerchantRevertCalldata(token, amount, order)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.SendTx(ctx, payerKey, &merchant, refuse); err == nil || !strings.Contains(err.Error(), "merchant refuses") {
		t.Errorf("SendTx of a refused deposit: %v, want an estimation error quoting the revert", err)
	}
	r = sendAndWait(t, ctx, n, payerKey, merchant, refuse, 200_000)
	if r.Status != types.ReceiptStatusFailed || len(r.Logs) != 0 {
		t.Errorf("refused deposit: status %d with %d logs, want status 0 and no logs", r.Status, len(r.Logs))
	}
	if r.GasUsed == 0 || r.GasUsed >= 200_000 {
		t.Errorf("refused deposit used %d gas, want a revert well below the 200,000 limit", r.GasUsed)
	}
	checkBalances(t, ctx, n, token, map[common.Address]int64{merchant: 2_500_000, payer: 7_500_000})
	if paid, err := n.MerchantPaid(ctx, merchant, order); err != nil || paid.Cmp(amount) != 0 {
		t.Errorf("paid[order] after the bounce = %v, %v; want %s", paid, err, amount)
	}

	// TransferCalldata: a plain transfer from the payer.
	transfer, err := TransferCalldata(DevAddress(4), big.NewInt(1_000))
	if err != nil {
		t.Fatal(err)
	}
	r = sendAndWait(t, ctx, n, payerKey, token, transfer, 0)
	checkTransfers(t, "transfer calldata", r, token, 1)
	checkBalances(t, ctx, n, token, map[common.Address]int64{payer: 7_499_000, DevAddress(4): 1_000})
}

func checkBalances(t *testing.T, ctx context.Context, n *Node, token common.Address, want map[common.Address]int64) {
	t.Helper()
	for addr, w := range want {
		got, err := n.BalanceOf(ctx, token, addr)
		if err != nil {
			t.Fatal(err)
		}
		if got.Int64() != w {
			t.Errorf("token balance of %s = %s, want %d", addr, got, w)
		}
	}
}

func TestSetBalance(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx := testCtx(t)
	treasury := common.HexToAddress("0x00000000000000000000000000000000000a11ce")
	for _, wei := range []*big.Int{
		new(big.Int).Mul(big.NewInt(5), big.NewInt(1e18)),
		big.NewInt(1),
		big.NewInt(0),
	} {
		if err := n.SetBalance(ctx, treasury, wei); err != nil {
			t.Fatal(err)
		}
		got, err := n.Client().BalanceAt(ctx, treasury, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cmp(wei) != 0 {
			t.Errorf("balance after SetBalance(%s) = %s", wei, got)
		}
	}
	// A fresh key funded only by SetBalance can pay for its own transactions.
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fresh := crypto.PubkeyToAddress(key.PublicKey)
	oneEth := big.NewInt(1e18)
	if err := n.SetBalance(ctx, fresh, oneEth); err != nil {
		t.Fatal(err)
	}
	r := sendAndWait(t, ctx, n, key, DevAddress(0), nil, 0)
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("transaction from a SetBalance-funded key: status %d", r.Status)
	}
	fee := new(big.Int).Mul(new(big.Int).SetUint64(r.GasUsed), r.EffectiveGasPrice)
	if got, err := n.Client().BalanceAt(ctx, fresh, nil); err != nil || new(big.Int).Add(got, fee).Cmp(oneEth) != 0 {
		t.Errorf("balance after paying %s wei of gas = %v, %v; want 1 ETH minus the fee", fee, got, err)
	}

	if err := n.SetBalance(ctx, treasury, big.NewInt(-1)); err == nil {
		t.Error("SetBalance with a negative amount succeeded")
	}
	if err := n.SetBalance(ctx, treasury, nil); err == nil {
		t.Error("SetBalance with nil succeeded")
	}
}
