package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/hdwallet"
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

// settle api serves /metrics on api.metrics_listen only: the public listener
// answers 404 for it, the metrics listener has the API's and the process's
// series.
func TestAPIMetricsOwnListener(t *testing.T) {
	db := dbtest.Migrated(t)
	master, err := hdwallet.MasterFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	xpub, err := master.AccountXPub()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("api: {listen: '127.0.0.1:0', metrics_listen: '127.0.0.1:0'}\n"+
		"treasury: {address: '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359'}\n"+
		"receivers: {evm_xpub: '"+xpub+"'}\n"+
		"chains: [{name: A, id: 1, family: evm, tokens: [{symbol: USDC, address: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913', decimals: 6}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(p, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	metricsAddr, err := metricsGroup(gctx, g, cfg.API.MetricsListen, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	apiAddr, err := apiGroup(gctx, g, cfg, db.PG, db.CH, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("http://" + apiAddr.String() + "/healthz"); code != 200 {
		t.Fatalf("api healthz: %d", code)
	}
	if code, body := get("http://" + apiAddr.String() + "/metrics"); code != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("public listener GET /metrics: %d %q, want 404 not_found", code, body)
	}
	// settle api serves the exceptions inbox (it answers for the API key,
	// where an unwired route would be a 404).
	if code, body := get("http://" + apiAddr.String() + "/v1/exceptions"); code != 401 || !strings.Contains(body, `"missing_api_key"`) {
		t.Errorf("GET /v1/exceptions: %d %q, want 401 missing_api_key", code, body)
	}
	code, body := get("http://" + metricsAddr.String() + "/metrics")
	if code != 200 {
		t.Fatalf("metrics listener: %d", code)
	}
	for _, want := range []string{`settle_api_requests_total{method="GET",route="GET /healthz",status="200"} 1`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	cancel()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("shutdown: %v", err)
	}
}
