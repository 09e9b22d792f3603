package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/dbtest"
)

// The API key of a chain's rpc_url never reaches a log line, in either
// log format, whether the URL is logged, quoted by an error, or the key
// alone is echoed; the provider's host stays.
func TestLoggerRedactsRPCURLs(t *testing.T) {
	const key = "k3y0fTheRPCPr0vider5ecret"
	cfg := &fileConfig{Chains: []chainConfig{
		{Name: "base", RPCURL: "https://base-mainnet.g.alchemy.com/v2/" + key},
		{Name: "eth", RPCURL: "https://x.quiknode.pro/" + key + "2/"},
	}}
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		cfg.LogFormat = format
		logger, err := newLogger(cfg, &buf)
		if err != nil {
			t.Fatal(err)
		}
		logger.With("rpc_url", cfg.Chains[0].RPCURL).Warn("fetching blocks failed; retrying",
			"err", errors.New(`eth_getLogs: Post "`+cfg.Chains[1].RPCURL+`": dial tcp 1.2.3.4:443: connection refused`),
			"body", "no route for /v2/"+key)
		out := buf.String()
		if strings.Contains(out, key) {
			t.Errorf("%s log carries the key: %s", format, out)
		}
		for _, host := range []string{"https://base-mainnet.g.alchemy.com/REDACTED", "https://x.quiknode.pro/REDACTED"} {
			if !strings.Contains(out, host) {
				t.Errorf("%s log lacks %s: %s", format, host, out)
			}
		}
	}
	logger, err := newLogger(&fileConfig{LogLevel: "warn"}, &bytes.Buffer{})
	if err != nil || logger.Enabled(context.Background(), slog.LevelInfo) {
		t.Errorf("log_level warn: info enabled (%v)", err)
	}
}

// `settle payouts list` prints payouts.error; an error stored before
// delivery redacted it is redacted on the way out.
func TestPayoutsListRedactsStoredErrors(t *testing.T) {
	db := dbtest.Migrated(t)
	t.Setenv("SETTLE_POSTGRES_URL", db.PostgresURL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "k3y0fTheRPCPr0vider5ecret"
	cfgPath := filepath.Join(t.TempDir(), "settle.yaml")
	if err := os.WriteFile(cfgPath, []byte("chains: [{name: anvil, id: 31337, family: evm, rpc_url: 'https://x.quiknode.pro/"+key+"/'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO merchants (id, name) VALUES ('m_test', 'M')`,
		`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
			dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
			VALUES ('0123456789abcdef0123456789abcdef', 'm_test', 'processing', 'evm', '0x00000000000000000000000000000000000000bb', 31337, 'anvil',
			'0x5fbdb2315678afecb367f032d93f642f64180aa3', 'TUSD', 6, '{}', 's', now(), now() + interval '1 hour')`,
		`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status, error)
			VALUES ('0123456789abcdef0123456789abcdef', 'delivery', 31337, '0x5fbdb2315678afecb367f032d93f642f64180aa3', '0x00000000000000000000000000000000000000bb',
			2500000, 'needs_attention', 'estimating gas: Post "https://x.quiknode.pro/` + key + `/": EOF; 401 for /` + key + `/')`,
	} {
		if _, err := db.PG.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"payouts", "list", "-config", cfgPath}, &out, &out); err != nil {
		t.Fatalf("payouts list: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), key) || !strings.Contains(out.String(), `Post "https://x.quiknode.pro/REDACTED": EOF`) {
		t.Errorf("payouts list:\n%s", out.String())
	}
}
