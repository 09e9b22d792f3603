package delivery

import (
	"context"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"
)

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
