package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestShippedConfigsLoad(t *testing.T) {
	for _, tc := range []struct {
		path   string
		dev    bool
		chains int
	}{
		{"", true, 2},
		{"../../settle.example.yaml", false, 4},
	} {
		cfg, err := loadConfig(tc.path, tc.dev)
		if err != nil {
			t.Fatalf("%q: %v", tc.path, err)
		}
		reg, err := cfg.registry()
		if err != nil {
			t.Fatalf("%q: %v", tc.path, err)
		}
		if n := len(reg.All()); n != tc.chains {
			t.Errorf("%q: %d chains, want %d", tc.path, n, tc.chains)
		}
	}
}

func TestConfigEnvOverridesAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("SETTLE_POSTGRES_URL", "postgres://from-env")
	t.Setenv("SETTLE_SESSION_TTL", "30m")
	cfg, err := loadConfig(write("postgres_url: postgres://from-file\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PostgresURL != "postgres://from-env" || cfg.API.SessionTTL != 30*time.Minute || cfg.API.Listen != "127.0.0.1:8080" {
		t.Errorf("overrides/defaults not applied: %+v", cfg)
	}
	if cfg.API.MetricsListen != "127.0.0.1:9100" {
		t.Errorf("api.metrics_listen default = %q, want 127.0.0.1:9100", cfg.API.MetricsListen)
	}
	t.Setenv("SETTLE_API_METRICS_LISTEN", "127.0.0.1:19100")
	if cfg, err = loadConfig(write("api: {metrics_listen: '0.0.0.0:9100'}\n"), false); err != nil || cfg.API.MetricsListen != "127.0.0.1:19100" {
		t.Errorf("SETTLE_API_METRICS_LISTEN over the file: %v, %v", cfg, err)
	}
	t.Setenv("SETTLE_API_METRICS_LISTEN", "")
	t.Setenv("SETTLE_SESSION_TTL", "")
	for body, want := range map[string]string{
		"postgress_url: x\n":        "field postgress_url not found",
		"api: {session_ttl: 10s}\n": "out of range",
		"chains: [{name: A, id: 1, family: evm, tokens: [{symbol: X, address: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD', decimals: 6}]}]\n": "checksum",
		"chains: [{name: A, id: 1, family: evm}, {name: B, id: 1, family: evm}]\n":                                                             "used twice",
		"chains: [{name: Sol, id: 900, family: solana}]\n":                                                                                     "not supported yet",
		"chains: [{name: X, id: 1}]\n": "not supported yet",
	} {
		cfg, err := loadConfig(write(body), false)
		if err == nil {
			_, err = cfg.registry()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: error %v, want one mentioning %q", body, err, want)
		}
	}
	if _, err := loadConfig("", false); err == nil {
		t.Error("no config file and not dev: want an error")
	}
}
