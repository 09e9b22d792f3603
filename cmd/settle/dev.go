package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/schema"
)

// cmdDev runs the whole system in one process against the local databases
// (scripts/services.sh), with a persistent dev master seed and a demo
// merchant whose key it prints with working curl commands.
func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := commonFlags("dev", args, stderr, true, nil)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	dir := cmpOr(os.Getenv("SETTLE_DEV_DIR"), filepath.Join(".local", "dev"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating dev state dir: %w", err)
	}
	if err := ensureDatabases(ctx, cfg); err != nil {
		return err
	}
	master, err := devMaster(dir)
	if err != nil {
		return err
	}
	if cfg.Receivers.EVMXPub == "" {
		if cfg.Receivers.EVMXPub, err = master.AccountXPub(); err != nil {
			return err
		}
	}
	treasury, err := master.TreasuryKey()
	if err != nil {
		return err
	}
	cfg.Treasury.Address = crypto.PubkeyToAddress(treasury.PublicKey).Hex()
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	ch, err := openClickHouse(ctx, cfg.ClickHouseURL)
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := schema.Migrate(ctx, pg, ch, logger); err != nil {
		return err
	}
	key, err := demoKey(ctx, store.New(pg), dir)
	if err != nil {
		return err
	}

	if cfg.Dev.Anvil {
		nodes, err := startDevChains(ctx, cfg, dir, common.HexToAddress(cfg.Treasury.Address), logger)
		if err != nil {
			return err
		}
		defer func() {
			for _, n := range nodes {
				_ = n.Close()
			}
		}()
	}

	// One process, one registry: every component's metrics on the API's
	// metrics listener, none on the API itself.
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	metricsAddr, err := metricsGroup(gctx, g, cfg.API.MetricsListen, reg, logger)
	if err != nil {
		return err
	}
	addr, err := apiGroup(gctx, g, cfg, pg, ch, logger, reg)
	if err != nil {
		return err
	}
	if err := expiryGroup(gctx, g, cfg, pg, logger, reg); err != nil {
		return err
	}
	if err := reconcilerGroup(gctx, g, cfg, pg, ch, logger, reg); err != nil {
		return err
	}
	if err := deliveryGroup(gctx, g, cfg, pg, master, logger, reg); err != nil {
		return err
	}
	if err := dispatcherGroup(gctx, g, cfg, pg, logger, reg); err != nil {
		return err
	}
	if err := devWebhookGroup(gctx, g, cfg, pg, key, stdout, logger); err != nil {
		return err
	}
	for i := range cfg.Chains {
		if cc := &cfg.Chains[i]; cc.Family == "evm" && cc.RPCURL != "" {
			if err := indexerGroup(gctx, g, cc, pg, ch, logger, reg); err != nil {
				return err
			}
		}
	}
	base := "http://" + addr.String()
	if err := printBanner(gctx, stdout, base, "http://"+metricsAddr.String()+"/metrics", key, filepath.Join(dir, "demo-api-key"), cfg); err != nil {
		logger.Warn("could not create the demo session or payment for the banner", "err", err)
	}
	return g.Wait()
}

// ensureDatabases creates the dev databases named in the config's URLs.
func ensureDatabases(ctx context.Context, cfg *fileConfig) error {
	u, err := url.Parse(cfg.PostgresURL)
	if err != nil {
		return fmt.Errorf("parsing postgres_url: %w", err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return fmt.Errorf("connecting to postgres (is it running? `scripts/services.sh up`): %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("checking dev database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("creating dev database: %w", err)
		}
	}
	cu, err := url.Parse(cfg.ClickHouseURL)
	if err != nil {
		return fmt.Errorf("parsing clickhouse_url: %w", err)
	}
	chName := strings.TrimPrefix(cu.Path, "/")
	cu.Path = "/default"
	ch, err := openClickHouse(ctx, cu.String())
	if err != nil {
		return fmt.Errorf("%w (is it running? `scripts/services.sh up`)", err)
	}
	defer ch.Close()
	if err := ch.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+chName); err != nil {
		return fmt.Errorf("creating clickhouse dev database: %w", err)
	}
	return nil
}

// devMaster loads (or creates) the dev master seed. The seed stays on disk
// so receivers and the treasury survive restarts of `make dev`.
func devMaster(dir string) (*hdwallet.Master, error) {
	path := filepath.Join(dir, "master-seed")
	raw, err := os.ReadFile(path)
	var seed []byte
	switch {
	case errors.Is(err, os.ErrNotExist):
		if seed, err = hdwallet.NewSeed(); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("writing dev master seed: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("reading dev master seed: %w", err)
	default:
		if seed, err = hex.DecodeString(strings.TrimSpace(string(raw))); err != nil {
			return nil, fmt.Errorf("dev master seed %s: %w", path, err)
		}
	}
	return hdwallet.MasterFromSeed(seed)
}

// demoKey returns the demo merchant's API key, creating merchant and key on
// first run. Only the hash is in Postgres, so the plaintext is kept in the
// dev state dir for the next banner.
func demoKey(ctx context.Context, st *store.Store, dir string) (string, error) {
	path := filepath.Join(dir, "demo-api-key")
	if raw, err := os.ReadFile(path); err == nil {
		key := strings.TrimSpace(string(raw))
		if _, err := st.MerchantByAPIKey(ctx, key); err == nil {
			return key, nil
		}
	}
	m, err := st.CreateMerchant(ctx, "Demo Merchant")
	if err != nil {
		return "", err
	}
	key, _, err := st.CreateAPIKey(ctx, m.ID)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving demo key: %w", err)
	}
	return key, nil
}

// printBanner creates one demo session through the running API, so every
// command it prints works exactly as printed.
func printBanner(ctx context.Context, w io.Writer, base, metrics, key, keyPath string, cfg *fileConfig) error {
	var chainID uint64
	var token string
	for _, c := range cfg.Chains {
		if c.Family == "evm" && len(c.Tokens) > 0 {
			chainID, token = c.ID, c.Tokens[0].Address
			break
		}
	}
	create := fmt.Sprintf(`{"destination":{"type":"evm","address":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","chainId":%d,"tokenAddress":"%s","amountUnits":"10.00"},"display":{"title":"Deposit to Demo","verb":"Deposit"},"metadata":{"orderId":"demo-1"}}`, chainID, token)
	var resp struct {
		Session struct {
			SessionID    string `json:"sessionId"`
			ClientSecret string `json:"clientSecret"`
		} `json:"session"`
	}
	err := demoRequest(ctx, base+"/v1/sessions", "Authorization", "Bearer "+key, create, &resp)
	fmt.Fprintf(w, `
settle dev is running
  API        %[1]s
  metrics    %[9]s
  health     %[1]s/healthz  %[1]s/readyz
  postgres   %[2]s
  clickhouse %[3]s

Demo merchant API key (also in %[10]s):
  export SETTLE_KEY=%[4]s

Dev chains (anvil, 1s blocks; payer %[6]s holds test USDC):
%[7]s
Every token transfer they index, in ClickHouse:
  clickhouse-client --port 19000 -q "SELECT chain_id, block_number, token, from_address, to_address, amount_raw FROM %[8]s.transfers FINAL WHERE deleted = 0 ORDER BY block_number DESC LIMIT 10"

Create a session:
  curl -s -X POST %[1]s/v1/sessions -H "Authorization: Bearer $SETTLE_KEY" -H 'Content-Type: application/json' \
    -d '%[5]s'
`, base, cfg.PostgresURL, cfg.ClickHouseURL, key, create, anvil.DevAddress(devPayer).Hex(), chainLines(cfg), chDatabase(cfg), metrics, keyPath)
	if err != nil {
		return err
	}
	id, secret := resp.Session.SessionID, resp.Session.ClientSecret
	fmt.Fprintf(w, `
A demo session was created for you: %[2]s
Pick the EVM payment method (allocates its receiver address):
  curl -s -X POST %[1]s/v1/sessions/%[2]s/paymentMethods -H 'Content-Type: application/json' \
    -d '{"clientSecret":"%[3]s","paymentMethod":{"type":"evm"}}'
Read it back with the API key (full view) and as the payer (public view):
  curl -s %[1]s/v1/sessions/%[2]s -H "Authorization: Bearer $SETTLE_KEY"
  curl -s '%[1]s/v1/sessions/%[2]s?clientSecret=%[3]s'
Pay it from the dev payer on a dev chain and watch it go processing -> succeeded:
  ./bin/settle dev pay %[2]s 10.00
`, base, id, secret)
	return printPaymentBanner(ctx, w, base, key, chainID, token)
}

// printPaymentBanner creates a demo payment through the Payments API and
// prints its hosted checkout page. Its externalId is new on every start:
// a repeated one would return the payment of an earlier run, maybe paid.
func printPaymentBanner(ctx context.Context, w io.Writer, base, key string, chainID uint64, token string) error {
	ext := fmt.Sprintf("demo-order-%d", time.Now().Unix())
	create := fmt.Sprintf(`{"display":{"intent":"Demo order","items":[{"name":"Coffee beans, 1 kg","description":"Washed, medium roast"}]},"destination":{"destinationAddress":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","chainId":%d,"tokenAddress":"%s","amountUnits":"2.50"},"externalId":"%s","metadata":{"orderId":"%s"}}`, chainID, token, ext, ext)
	var resp struct {
		ID  string `json:"id"`
		URL string `json:"url"`
	}
	if err := demoRequest(ctx, base+"/api/payment", "Api-Key", key, create, &resp); err != nil {
		return err
	}
	fmt.Fprintf(w, `
A demo payment (Payments API) was created too: %[2]s
Open its checkout page in a browser, pick a chain and token, and pay with any wallet on the dev chain:
  %[4]s
or let the dev payer pay through the page and watch payment_unpaid -> payment_started -> payment_completed:
  ./bin/settle dev pay %[2]s 2.50
Read it back by id and by externalId:
  curl -s %[1]s/api/payment/%[2]s -H "Api-Key: $SETTLE_KEY"
  curl -s %[1]s/api/payment/external-id/%[3]s -H "Api-Key: $SETTLE_KEY"
The same create again returns this payment (200): its externalId is taken. Change it for a new one:
  curl -s -X POST %[1]s/api/payment -H "Api-Key: $SETTLE_KEY" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: demo-$(date +%%s%%N)" -d '%[5]s'

`, base, resp.ID, ext, resp.URL, create)
	return nil
}

// demoRequest POSTs body with one auth header and decodes a 200 or 201.
func demoRequest(ctx context.Context, url, authHeader, authValue, body string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set(authHeader, authValue)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func chainLines(cfg *fileConfig) string {
	var b strings.Builder
	for _, c := range cfg.Chains {
		fmt.Fprintf(&b, "  %-12s id %-6d %s\n", c.Name, c.ID, c.RPCURL)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func chDatabase(cfg *fileConfig) string {
	u, err := url.Parse(cfg.ClickHouseURL)
	if err != nil {
		return "default"
	}
	return cmpOr(strings.TrimPrefix(u.Path, "/"), "default")
}
