package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/fiat/sandbox"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/internal/mirror"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/reconciler"
	"github.com/settle-dev/settle/schema"
	"github.com/settle-dev/settle/webhook"
)

func cmdMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := commonFlags("migrate", args, stderr, false, nil)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, true)
	if err != nil {
		return err
	}
	defer d.Close()
	logger, pg, ch := d.logger, d.pg, d.ch
	res, err := schema.Migrate(ctx, pg, ch, logger)
	if err != nil {
		return err
	}
	logger.Info("migrations done", "postgres_applied", len(res.Postgres), "clickhouse_applied", len(res.ClickHouse))
	return nil
}

// fiatSandbox is the sandbox onramp when dev.fiat_sandbox asks for it,
// on the first EVM chain (which must be on loopback: the wallet is anvil's
// well-known account 4) and its first token; nil otherwise.
func fiatSandbox(ctx context.Context, cfg *fileConfig, publicURL string, logger *slog.Logger) (*sandbox.Provider, error) {
	if !cfg.Dev.FiatSandbox {
		return nil, nil
	}
	for _, cc := range cfg.Chains {
		if cc.Family != "evm" || cc.RPCURL == "" || len(cc.Tokens) == 0 {
			continue
		}
		u, err := url.Parse(cc.RPCURL)
		if err != nil || !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("dev.fiat_sandbox pays from a well-known dev key, so its chain %s must be on loopback, not %q", cc.Name, cc.RPCURL)
		}
		client, err := ethclient.DialContext(ctx, cc.RPCURL)
		if err != nil {
			return nil, fmt.Errorf("dialing %s for the sandbox onramp: %w", cc.Name, err)
		}
		t := cc.Tokens[0]
		p, err := sandbox.New(sandbox.Config{PublicURL: publicURL, ChainID: cc.ID, Client: client, Logger: logger,
			Token: chain.Token{Symbol: t.Symbol, Address: strings.ToLower(t.Address), Decimals: t.Decimals}, Wallet: anvil.DevKeys[devOnramp]})
		if err != nil {
			return nil, err
		}
		logger.Info("fiat method on: sandbox onramp", "chain", cc.Name, "token", t.Symbol, "wallet", p.Address().Hex())
		return p, nil
	}
	return nil, errors.New("dev.fiat_sandbox needs an EVM chain with an rpc_url and a token")
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// apiGroup adds the API server and the receiver mirror to g.
func apiGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, ch driver.Conn, logger *slog.Logger, reg *prometheus.Registry) (net.Addr, error) {
	chains, err := cfg.registry()
	if err != nil {
		return nil, err
	}
	if cfg.Receivers.EVMXPub == "" {
		return nil, fmt.Errorf("receivers.evm_xpub is not set (config or SETTLE_EVM_XPUB); `settle keys new` makes one")
	}
	receivers, err := hdwallet.ParseXPub(cfg.Receivers.EVMXPub)
	if err != nil {
		return nil, fmt.Errorf("receivers.evm_xpub: %w", err)
	}
	st := store.New(pg).ExpectChains(chains.Indexed()...)
	m := mirror.New(mirror.Config{Store: st, ClickHouse: ch, Logger: logger})
	hint, err := txHint(ctx, cfg, chains, pg, ch, logger)
	if err != nil {
		return nil, err
	}
	// The API refuses the treasury as a payee; running without knowing it
	// would let a session pay the treasury's float to a merchant.
	if cfg.Treasury.Address == "" {
		return nil, fmt.Errorf("treasury.address is not set (config or SETTLE_TREASURY_ADDRESS); `settle keys new` prints it")
	}
	codes, err := newCodeChecker(ctx, cfg.Chains)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening for api: %w", err)
	}
	publicURL := cfg.API.PublicURL
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	fiat, err := fiatSandbox(ctx, cfg, publicURL, logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	acfg := api.Config{
		PublicURL:       publicURL,
		Chains:          chains,
		Store:           st,
		Exceptions:      st,
		Webhooks:        webhook.NewStore(pg, cfg.webhookPolicy()),
		Events:          st,
		EVMReceivers:    receivers,
		Treasury:        cfg.Treasury.Address,
		CodeChecker:     codes,
		ReceiverCreated: m.Kick,
		TxHint:          hint,
		Ready: map[string]func(context.Context) error{
			"postgres":   pg.Ping,
			"clickhouse": ch.Ping,
		},
		SessionTTL: cfg.API.SessionTTL,
		Logger:     logger,
		Registerer: reg,
	}
	if fiat != nil {
		acfg.Fiat, acfg.Mount = fiat, map[string]http.Handler{sandbox.Path: fiat}
	}
	srv, err := api.New(acfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	g.Go(func() error { return srv.Run(ctx, ln) })
	g.Go(func() error { return m.Run(ctx) })
	return ln.Addr(), nil
}

func expiryGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) error {
	chains, err := cfg.registry()
	if err != nil {
		return err
	}
	e := reconciler.NewExpirer(reconciler.ExpiryConfig{Store: store.New(pg).ExpectChains(chains.Indexed()...), Logger: logger, Registerer: reg})
	g.Go(func() error { return e.Run(ctx) })
	return nil
}

func cmdAPI(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := commonFlags("api", args, stderr, false, nil)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, true)
	if err != nil {
		return err
	}
	defer d.Close()
	logger, pg, ch := d.logger, d.pg, d.ch
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	if _, err := metricsGroup(gctx, g, cfg.API.MetricsListen, reg, logger); err != nil {
		return err
	}
	if _, err := apiGroup(gctx, g, cfg, pg, ch, logger, reg); err != nil {
		return err
	}
	return g.Wait()
}

func cmdReconciler(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := commonFlags("reconciler", args, stderr, false, nil)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, true)
	if err != nil {
		return err
	}
	defer d.Close()
	logger, pg, ch := d.logger, d.pg, d.ch
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	if err := expiryGroup(gctx, g, cfg, pg, logger, reg); err != nil {
		return err
	}
	if err := reconcilerGroup(gctx, g, cfg, pg, ch, logger, reg); err != nil {
		return err
	}
	g.Go(func() error { return serveMetrics(gctx, cfg.Reconciler.MetricsListen, reg, logger) })
	return g.Wait()
}

func cmdMerchantCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var name *string
	cfg, err := commonFlags("merchant create", args, stderr, false, func(fs *flag.FlagSet) {
		name = fs.String("name", "", "merchant name (required)")
	})
	if err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("merchant create: -name is required")
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	st := store.New(pg)
	m, err := st.CreateMerchant(ctx, *name)
	if err != nil {
		return err
	}
	key, keyID, err := st.CreateAPIKey(ctx, m.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "merchant_id: %s\napi_key_id:  %s\napi_key:     %s\n\nThe API key is shown only once; settle stores only its hash.\n", m.ID, keyID, key)
	return nil
}

func cmdAPIKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var merchant *string
	cfg, err := commonFlags("apikey create", args, stderr, false, func(fs *flag.FlagSet) {
		merchant = fs.String("merchant", "", "merchant id (required)")
	})
	if err != nil {
		return err
	}
	if *merchant == "" {
		return fmt.Errorf("apikey create: -merchant is required")
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	key, keyID, err := store.New(pg).CreateAPIKey(ctx, *merchant)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "api_key_id: %s\napi_key:    %s\n\nThe API key is shown only once; settle stores only its hash.\n", keyID, key)
	return nil
}

func cmdKeysNew(stdout io.Writer) error {
	seed, err := hdwallet.NewSeed()
	if err != nil {
		return err
	}
	m, err := hdwallet.MasterFromSeed(seed)
	if err != nil {
		return err
	}
	xpub, err := m.AccountXPub()
	if err != nil {
		return err
	}
	tk, err := m.TreasuryKey()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "master_seed:      %s\nevm_xpub:         %s\ntreasury_address: %s\n\n"+
		"Keep master_seed secret and backed up: every receiver's and the treasury's private key derives from it.\n"+
		"The API needs evm_xpub (receivers.evm_xpub or SETTLE_EVM_XPUB) and the treasury address (treasury.address\n"+
		"or SETTLE_TREASURY_ADDRESS), the reconciler the treasury address; only `settle delivery` needs the seed (SETTLE_MASTER_SEED).\n"+
		"Fund the treasury with gas and the destination tokens on every chain it pays on, then deploy the executor\n"+
		"that runs merchant calldata on each chain (`settle delivery deploy -chain NAME`; set the address it prints\n"+
		"as the chain's executor_address).\n",
		hex.EncodeToString(seed), xpub, crypto.PubkeyToAddress(tk.PublicKey).Hex())
	return nil
}

// txHint returns the check endpoint's transaction lookup: a reconciler that
// is never Run, used only to apply one transaction's transfers, with a
// client per EVM chain that has an rpc_url. Nil when there is none.
func txHint(ctx context.Context, cfg *fileConfig, chains *chain.Registry, pg *pgxpool.Pool, ch driver.Conn, logger *slog.Logger) (func(context.Context, string, string) error, error) {
	clients := map[uint64]reconciler.TxReader{}
	for _, c := range cfg.Chains {
		if c.Family == "evm" && c.RPCURL != "" {
			cl, err := ethclient.DialContext(ctx, c.RPCURL)
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", c.Name, err)
			}
			clients[c.ID] = cl
		}
	}
	if len(clients) == 0 {
		return nil, nil
	}
	r, err := reconciler.New(reconciler.Config{Chains: chains, Postgres: pg, ClickHouse: ch, Logger: logger, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, sessionID, txHash string) error {
		_, err := r.AttributeTx(ctx, clients, sessionID, txHash)
		return err
	}, nil
}

func cmdAPIKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var keyID *string
	cfg, err := commonFlags("apikey revoke", args, stderr, false, func(fs *flag.FlagSet) {
		keyID = fs.String("id", "", "api key id, as `apikey create` printed it (required)")
	})
	if err != nil {
		return err
	}
	if *keyID == "" {
		return fmt.Errorf("apikey revoke: -id is required")
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := store.New(pg).RevokeAPIKey(ctx, *keyID); err != nil {
		return fmt.Errorf("revoking %s: %w", *keyID, err)
	}
	fmt.Fprintf(stdout, "api key %s revoked\n", *keyID)
	return nil
}
