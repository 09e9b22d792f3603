package evm

import (
	"bytes"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/internal/anvil"
)

func TestERC20EncodingMatchesABI(t *testing.T) {
	to := common.HexToAddress("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
	amount, _ := new(big.Int).SetString("115792089237316195423570985008687907853269984665640564039457584007913129639935", 10) // 2^256-1
	want, err := anvil.TransferCalldata(to, amount)
	if err != nil {
		t.Fatal(err)
	}
	if got := transferData(to, amount); !bytes.Equal(got, want) {
		t.Errorf("transfer data\n got %x\nwant %x", got, want)
	}
	want, err = anvil.ApproveCalldata(to, big.NewInt(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := approveData(to, new(big.Int)); !bytes.Equal(got, want) {
		t.Errorf("approve data\n got %x\nwant %x", got, want)
	}
	if err := checkAmount(new(big.Int).Add(amount, big.NewInt(1))); err == nil {
		t.Error("checkAmount accepted 2^256")
	}
	if err := checkAmount(new(big.Int)); err == nil {
		t.Error("checkAmount accepted 0")
	}
}
