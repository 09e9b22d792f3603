package delivery

import (
	"bytes"
	"context"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"

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

func TestBumpFees(t *testing.T) {
	gwei := func(x int64) *big.Int { return new(big.Int).Mul(big.NewInt(x), big.NewInt(1e9)) }
	for _, c := range []struct {
		name          string
		old, now      fees
		wantTip, wCap *big.Int
	}{
		{"quiet chain: +25% each", fees{gwei(2), gwei(22)}, fees{gwei(1), gwei(11)}, big.NewInt(2_500_000_000), big.NewInt(27_500_000_000)},
		{"rounds up", fees{big.NewInt(3), big.NewInt(7)}, fees{big.NewInt(1), big.NewInt(1)}, big.NewInt(4), big.NewInt(9)},
		{"zero tip still rises", fees{big.NewInt(0), big.NewInt(1)}, fees{big.NewInt(0), big.NewInt(1)}, big.NewInt(1), big.NewInt(2)},
		{"base fee rose: follow the market", fees{gwei(1), gwei(21)}, fees{gwei(3), gwei(103)}, gwei(3), gwei(103)},
		{"tip rose above the cap's room", fees{gwei(1), gwei(21)}, fees{gwei(10), gwei(30)}, gwei(10), gwei(30)},
	} {
		got := bumpFees(c.old, c.now)
		if got.tip.Cmp(c.wantTip) != 0 || got.cap.Cmp(c.wCap) != 0 {
			t.Errorf("%s: bumpFees = tip %s cap %s, want %s %s", c.name, got.tip, got.cap, c.wantTip, c.wCap)
		}
		if got.cap.Cmp(got.tip) < 0 {
			t.Errorf("%s: cap %s below tip %s", c.name, got.cap, got.tip)
		}
	}
}

func TestUnits(t *testing.T) {
	if got := units(big.NewInt(1_234_500), 6); got != 1.2345 {
		t.Errorf("units = %v, want 1.2345", got)
	}
	if got := units(big.NewInt(7), 0); got != 7 {
		t.Errorf("units = %v, want 7", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// A pool connects lazily: this one never does.
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ok := func(c ChainClient) map[uint64]ChainClient { return map[uint64]ChainClient{1: c} }
	client := ethclient.NewClient(nil)
	for name, cfg := range map[string]Config{
		"no postgres":       {Treasury: key, Chains: ok(client)},
		"no treasury":       {Postgres: pool, Chains: ok(client)},
		"no chains":         {Postgres: pool, Treasury: key},
		"nil client":        {Postgres: pool, Treasury: key, Chains: ok(nil)},
		"chain id 0":        {Postgres: pool, Treasury: key, Chains: map[uint64]ChainClient{0: client}},
		"negative interval": {Postgres: pool, Treasury: key, Chains: ok(client), Interval: -1},
		"tokens elsewhere":  {Postgres: pool, Treasury: key, Chains: ok(client), Tokens: map[uint64][]Token{2: nil}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(Config{Postgres: pool, Treasury: key, Chains: ok(client)}); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}
