package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
)

func TestCodeChecker(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Test USD", "TUSD", 6)
	if err != nil {
		t.Fatal(err)
	}
	const noRPC = 99
	c, err := newCodeChecker(ctx, []chainConfig{
		{Name: "A", ID: node.ChainID(), Family: "evm", RPCURL: node.URL()},
		{Name: "B", ID: noRPC, Family: "evm"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var _ api.CodeChecker = c
	for _, tc := range []struct {
		name    string
		chainID uint64
		address string
		want    bool
	}{
		{"contract", node.ChainID(), token.Hex(), true},
		{"contract, lowercase", node.ChainID(), strings.ToLower(token.Hex()), true},
		{"funded EOA", node.ChainID(), anvil.DevAddress(1).Hex(), false},
		{"unused address", node.ChainID(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", false},
	} {
		got, err := c.HasCode(ctx, tc.chainID, tc.address)
		if err != nil || got != tc.want {
			t.Errorf("%s: HasCode = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	for _, id := range []uint64{noRPC, 12345} {
		if _, err := c.HasCode(ctx, id, token.Hex()); !errors.Is(err, api.ErrCodeUnchecked) {
			t.Errorf("chain %d without a node: %v, want ErrCodeUnchecked", id, err)
		}
	}
	// A node that stops answering is a failed check, never "unchecked".
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HasCode(ctx, node.ChainID(), token.Hex()); err == nil || errors.Is(err, api.ErrCodeUnchecked) {
		t.Errorf("node down: %v, want a failed check", err)
	}
}

func TestRegistryCarriesExecutorAddress(t *testing.T) {
	const executor = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
	p := filepath.Join(t.TempDir(), "c.yaml")
	write := func(body string) {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("chains: [{name: A, id: 1, family: evm, executor_address: '" + executor + "'}, {name: B, id: 2, family: evm}]\n")
	t.Setenv("SETTLE_CHAIN_2_EXECUTOR_ADDRESS", strings.ToLower(executor))
	cfg, err := loadConfig(p, false)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cfg.registry()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{1, 2} {
		if c, _ := reg.Chain(id); c.Executor != strings.ToLower(executor) {
			t.Errorf("chain %d executor = %q, want %q", id, c.Executor, strings.ToLower(executor))
		}
	}
	t.Setenv("SETTLE_CHAIN_2_EXECUTOR_ADDRESS", "")
	write("chains: [{name: A, id: 1, family: evm, executor_address: '0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6Fb'}]\n")
	if cfg, err = loadConfig(p, false); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.registry(); err == nil || !strings.Contains(err.Error(), "executor") {
		t.Errorf("executor with a bad checksum: %v, want an error naming the executor", err)
	}
}
