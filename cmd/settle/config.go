package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/settle-dev/settle/internal/chain"
)

// fileConfig is settle.yaml. Every field can be overridden by an environment
// variable, listed next to it; the README's configuration reference mirrors
// this struct.
type fileConfig struct {
	PostgresURL   string `yaml:"postgres_url"`   // SETTLE_POSTGRES_URL
	ClickHouseURL string `yaml:"clickhouse_url"` // SETTLE_CLICKHOUSE_URL
	LogFormat     string `yaml:"log_format"`     // SETTLE_LOG_FORMAT: json or text
	LogLevel      string `yaml:"log_level"`      // SETTLE_LOG_LEVEL: debug, info, warn, error
	API           struct {
		Listen string `yaml:"listen"` // SETTLE_API_LISTEN
		// MetricsListen serves the API's /metrics (and, under settle dev,
		// every component's): a listener of its own, so the public one
		// never exposes them.
		MetricsListen string        `yaml:"metrics_listen"` // SETTLE_API_METRICS_LISTEN
		SessionTTL    time.Duration `yaml:"session_ttl"`    // SETTLE_SESSION_TTL
		// PublicURL is where payers reach the API (the checkout page links
		// of POST /api/payment); default http:// plus the listen address.
		PublicURL string `yaml:"public_url"` // SETTLE_API_PUBLIC_URL
	} `yaml:"api"`
	Reconciler struct {
		MetricsListen string `yaml:"metrics_listen"` // SETTLE_RECONCILER_METRICS_LISTEN
	} `yaml:"reconciler"`
	Treasury struct {
		// Address is the treasury account that pays deliveries and
		// refunds; the reconciler recognises payouts by it. Derived from
		// the master seed when that is given.
		Address string `yaml:"address"` // SETTLE_TREASURY_ADDRESS
		// MasterSeedFile holds the hex master seed; only the delivery
		// process needs it (it signs with the treasury key).
		MasterSeedFile string `yaml:"master_seed_file"` // SETTLE_MASTER_SEED_FILE, or the seed itself in SETTLE_MASTER_SEED
	} `yaml:"treasury"`
	Receivers struct {
		// EVMXPub is the extended public key of m/44'/60'/0'/0: all the API
		// needs to derive EVM receivers. It never holds a private key.
		EVMXPub string `yaml:"evm_xpub"` // SETTLE_EVM_XPUB
	} `yaml:"receivers"`
	Delivery struct {
		MetricsListen string `yaml:"metrics_listen"` // SETTLE_DELIVERY_METRICS_LISTEN
	} `yaml:"delivery"`
	Indexer struct {
		MetricsListen string `yaml:"metrics_listen"` // SETTLE_INDEXER_METRICS_LISTEN
	} `yaml:"indexer"`
	// Webhooks configures the dispatcher (settle dispatcher, settle dev)
	// and which endpoint URLs the API accepts.
	Webhooks struct {
		MetricsListen string `yaml:"metrics_listen"` // SETTLE_WEBHOOKS_METRICS_LISTEN
		// AllowLoopback admits http:// and loopback endpoint URLs, and
		// lets the dispatcher connect to loopback: settle dev and tests
		// only. Deliberately no environment override, so a stray variable
		// cannot open the SSRF guard in production.
		AllowLoopback bool `yaml:"allow_loopback"`
		// Workers bounds concurrent webhook POSTs per dispatcher; 0 means 32.
		Workers int `yaml:"workers"`
	} `yaml:"webhooks"`
	Chains []chainConfig `yaml:"chains"`
	// Dev configures `settle dev` only.
	Dev struct {
		// Anvil starts a local anvil for every EVM chain whose rpc_url is
		// on loopback, and deploys the test tokens listed for it.
		Anvil bool `yaml:"anvil"`
		// FiatSandbox turns on the fiat method with the sandbox onramp
		// (fiat/sandbox): it pays the first chain's first token from anvil
		// account 4, so it is accepted only on a loopback chain.
		FiatSandbox bool `yaml:"fiat_sandbox"`
		// WebhookListen is settle dev's own webhook receiver, registered
		// for the demo merchant, which prints every event; default
		// 127.0.0.1:8090.
		WebhookListen string `yaml:"webhook_listen"`
	} `yaml:"dev"`
}

type chainConfig struct {
	Name   string        `yaml:"name"`
	ID     uint64        `yaml:"id"`
	Family string        `yaml:"family"`
	RPCURL string        `yaml:"rpc_url"` // SETTLE_CHAIN_<ID>_RPC_URL
	Tokens []tokenConfig `yaml:"tokens"`
	// ExecutorAddress is the SettleExecutor contract that runs merchant
	// calldata on this chain (`settle delivery deploy` prints it; `settle
	// dev` deploys and fills it in). Without it, sessions with calldata
	// cannot be delivered on this chain.
	ExecutorAddress string `yaml:"executor_address"` // SETTLE_CHAIN_<ID>_EXECUTOR_ADDRESS
	// CallGas is the gas a merchant call gets (and the most a hostile
	// destination can burn per payout); 0 means 500,000.
	CallGas uint64 `yaml:"call_gas"`
	// MaxFeeGwei is the fee ceiling of every delivery transaction (the
	// EIP-1559 fee cap, in gwei); 0 means 200. A payout stuck at it needs
	// attention instead of being bumped further.
	MaxFeeGwei uint64 `yaml:"max_fee_gwei"`
	// Indexer settings; zero values take the indexer's defaults.
	StartBlock    uint64 `yaml:"start_block"`
	FinalityDepth uint64 `yaml:"finality_depth"`
	// Finality is "depth" (default: finality_depth confirmations) or
	// "finalized" (the node's finalized tag).
	Finality      string        `yaml:"finality"`
	MaxReorgDepth uint64        `yaml:"max_reorg_depth"`
	RangeBlocks   uint64        `yaml:"range_blocks"`
	Workers       int           `yaml:"workers"`
	PollInterval  time.Duration `yaml:"poll_interval"`
}

type tokenConfig struct {
	Symbol   string `yaml:"symbol"`
	Address  string `yaml:"address"`
	Decimals uint8  `yaml:"decimals"`
	// SweepMin is the smallest sum of a receiver's final deposits of
	// this token worth sweeping into the treasury, in token units; "0"
	// never sweeps it. Default 10.
	SweepMin string `yaml:"sweep_min"`
}

//go:embed dev.yaml
var devConfig []byte

// loadConfig reads path (or the embedded dev config when path is empty and
// dev is true), then applies environment overrides and defaults.
func loadConfig(path string, dev bool) (*fileConfig, error) {
	var raw []byte
	switch {
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
		raw = b
	case dev:
		raw = devConfig
	default:
		return nil, fmt.Errorf("no config file: pass -config or set SETTLE_CONFIG")
	}
	var cfg fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a typo in a key is an error, not a silent default
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parsing config %s: %w", cmpOr(path, "(embedded dev config)"), err)
	}
	env := func(name string, dst *string) {
		if v := os.Getenv(name); v != "" {
			*dst = v
		}
	}
	env("SETTLE_POSTGRES_URL", &cfg.PostgresURL)
	env("SETTLE_CLICKHOUSE_URL", &cfg.ClickHouseURL)
	env("SETTLE_LOG_FORMAT", &cfg.LogFormat)
	env("SETTLE_LOG_LEVEL", &cfg.LogLevel)
	env("SETTLE_API_LISTEN", &cfg.API.Listen)
	env("SETTLE_API_METRICS_LISTEN", &cfg.API.MetricsListen)
	env("SETTLE_API_PUBLIC_URL", &cfg.API.PublicURL)
	env("SETTLE_RECONCILER_METRICS_LISTEN", &cfg.Reconciler.MetricsListen)
	env("SETTLE_EVM_XPUB", &cfg.Receivers.EVMXPub)
	env("SETTLE_INDEXER_METRICS_LISTEN", &cfg.Indexer.MetricsListen)
	env("SETTLE_TREASURY_ADDRESS", &cfg.Treasury.Address)
	env("SETTLE_MASTER_SEED_FILE", &cfg.Treasury.MasterSeedFile)
	env("SETTLE_DELIVERY_METRICS_LISTEN", &cfg.Delivery.MetricsListen)
	env("SETTLE_WEBHOOKS_METRICS_LISTEN", &cfg.Webhooks.MetricsListen)
	for i := range cfg.Chains {
		env(fmt.Sprintf("SETTLE_CHAIN_%d_RPC_URL", cfg.Chains[i].ID), &cfg.Chains[i].RPCURL)
		env(fmt.Sprintf("SETTLE_CHAIN_%d_EXECUTOR_ADDRESS", cfg.Chains[i].ID), &cfg.Chains[i].ExecutorAddress)
	}
	if v := os.Getenv("SETTLE_SESSION_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("SETTLE_SESSION_TTL: %w", err)
		}
		cfg.API.SessionTTL = d
	}
	cfg.API.Listen = cmpOr(cfg.API.Listen, "127.0.0.1:8080")
	cfg.API.MetricsListen = cmpOr(cfg.API.MetricsListen, "127.0.0.1:9100")
	cfg.Reconciler.MetricsListen = cmpOr(cfg.Reconciler.MetricsListen, "127.0.0.1:9101")
	cfg.Indexer.MetricsListen = cmpOr(cfg.Indexer.MetricsListen, "127.0.0.1:9102")
	cfg.Delivery.MetricsListen = cmpOr(cfg.Delivery.MetricsListen, "127.0.0.1:9103")
	cfg.Webhooks.MetricsListen = cmpOr(cfg.Webhooks.MetricsListen, "127.0.0.1:9104")
	cfg.Dev.WebhookListen = cmpOr(cfg.Dev.WebhookListen, "127.0.0.1:8090")
	if cfg.API.SessionTTL == 0 {
		cfg.API.SessionTTL = time.Hour
	}
	for _, c := range cfg.Chains {
		if c.Family != "evm" {
			// Accepting such a chain would let the API take sessions and
			// deposits that nothing indexes or pays out.
			return nil, fmt.Errorf("chain %s: family %q is not supported yet (only evm has an indexer and delivery)", c.Name, c.Family)
		}
		switch c.Finality {
		case "", "depth":
		case "finalized":
			if c.RPCURL == "" {
				return nil, fmt.Errorf("chain %s: finality: finalized needs rpc_url", c.Name)
			}
		default:
			return nil, fmt.Errorf("chain %s: finality %q: want depth or finalized", c.Name, c.Finality)
		}
	}
	if cfg.API.SessionTTL < time.Minute || cfg.API.SessionTTL > 7*24*time.Hour {
		return nil, fmt.Errorf("api.session_ttl %s is out of range (1m to 168h)", cfg.API.SessionTTL)
	}
	return &cfg, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// registry builds the chain registry from the config.
func (c *fileConfig) registry() (*chain.Registry, error) {
	chains := make([]chain.Chain, 0, len(c.Chains))
	for _, cc := range c.Chains {
		ch := chain.Chain{ID: cc.ID, Name: cc.Name, Family: chain.Family(cc.Family), Executor: cc.ExecutorAddress, Indexed: cc.RPCURL != ""}
		for _, t := range cc.Tokens {
			ch.Tokens = append(ch.Tokens, chain.Token{Symbol: t.Symbol, Address: t.Address, Decimals: t.Decimals})
		}
		chains = append(chains, ch)
	}
	r, err := chain.NewRegistry(chains)
	if err != nil {
		return nil, fmt.Errorf("config chains: %w", err)
	}
	return r, nil
}

// chain returns the configured chain with a name (case-insensitive) or a
// numeric id.
func (c *fileConfig) chain(nameOrID string) (*chainConfig, error) {
	for i := range c.Chains {
		cc := &c.Chains[i]
		if strings.EqualFold(cc.Name, nameOrID) || strconv.FormatUint(cc.ID, 10) == nameOrID {
			return cc, nil
		}
	}
	return nil, fmt.Errorf("no chain %q in the config", nameOrID)
}
