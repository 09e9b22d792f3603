package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/delivery"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/reconciler"
)

// reconcilerGroup adds the reconciler (attribution, settlement, ledger)
// to g.
func reconcilerGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, ch driver.Conn, logger *slog.Logger, reg prometheus.Registerer) error {
	chains, err := cfg.registry()
	if err != nil {
		return err
	}
	if cfg.Treasury.Address == "" {
		return fmt.Errorf("treasury.address is not set (config or SETTLE_TREASURY_ADDRESS); `settle keys new` prints it")
	}
	opts := map[uint64]reconciler.ChainOptions{}
	for _, c := range cfg.Chains {
		o := reconciler.ChainOptions{FinalityDepth: c.FinalityDepth, StartBlock: c.StartBlock, MaxReorgDepth: c.MaxReorgDepth}
		switch c.Finality {
		case "", "depth":
		case "finalized": // loadConfig checked rpc_url
			cl, err := ethclient.DialContext(ctx, c.RPCURL)
			if err != nil {
				return fmt.Errorf("chain %s: %w", c.Name, err)
			}
			o.Finalized = reconciler.FinalizedTag(cl)
		default:
			return fmt.Errorf("chain %s: finality %q: want depth or finalized", c.Name, c.Finality)
		}
		opts[c.ID] = o
	}
	r, err := reconciler.New(reconciler.Config{Chains: chains, Options: opts, Postgres: pg, ClickHouse: ch,
		Treasury: cfg.Treasury.Address, Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	g.Go(func() error { return r.Run(ctx) })
	return nil
}

// deliveryGroup adds the payout executor to g.
func deliveryGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, master *hdwallet.Master, logger *slog.Logger, reg prometheus.Registerer) error {
	ex, err := newDeliveryExecutor(ctx, cfg, pg, master, logger, reg)
	if err != nil {
		return err
	}
	g.Go(func() error { return ex.Run(ctx) })
	return nil
}

// newDeliveryExecutor builds the payout executor for every EVM chain of
// cfg that has an rpc_url: it signs with the treasury key and sweeps with
// the receivers' keys, both from master.
func newDeliveryExecutor(ctx context.Context, cfg *fileConfig, pg *pgxpool.Pool, master *hdwallet.Master, logger *slog.Logger, reg prometheus.Registerer) (*delivery.Executor, error) {
	key, err := master.TreasuryKey()
	if err != nil {
		return nil, err
	}
	sweepMin := map[uint64]map[common.Address]*big.Int{}
	clients := map[uint64]delivery.ChainClient{}
	finality := map[uint64]delivery.Finality{}
	tokens := map[uint64][]delivery.Token{}
	executors := map[uint64]common.Address{}
	callGas := map[uint64]uint64{}
	maxFee := map[uint64]*big.Int{}
	for _, c := range cfg.Chains {
		if c.Family != "evm" || c.RPCURL == "" {
			continue
		}
		cl, err := ethclient.DialContext(ctx, c.RPCURL)
		if err != nil {
			return nil, fmt.Errorf("chain %s: %w", c.Name, err)
		}
		clients[c.ID] = cl
		if c.ExecutorAddress != "" {
			executors[c.ID] = common.HexToAddress(c.ExecutorAddress) // registry() checked it
		}
		callGas[c.ID] = c.CallGas
		if c.MaxFeeGwei > 0 {
			maxFee[c.ID] = new(big.Int).Mul(new(big.Int).SetUint64(c.MaxFeeGwei), big.NewInt(1_000_000_000))
		}
		finality[c.ID] = delivery.Finality{Depth: c.FinalityDepth, Tag: c.Finality == "finalized"}
		sweepMin[c.ID] = map[common.Address]*big.Int{}
		for _, t := range c.Tokens {
			tokens[c.ID] = append(tokens[c.ID], delivery.Token{Address: common.HexToAddress(t.Address), Symbol: t.Symbol, Decimals: t.Decimals})
			min, err := chain.ParseUnits(cmpOr(t.SweepMin, defaultSweepMin), t.Decimals)
			if err != nil {
				return nil, fmt.Errorf("chain %s token %s sweep_min: %w", c.Name, t.Symbol, err)
			}
			if min.Sign() > 0 { // "0" turns sweeping of the token off
				sweepMin[c.ID][common.HexToAddress(t.Address)] = min
			}
		}
	}
	return delivery.New(delivery.Config{Postgres: pg, Chains: clients, Finality: finality, Tokens: tokens, Executors: executors, CallGas: callGas, MaxFeePerGas: maxFee,
		Treasury: key, ReceiverKey: master.PrivateKey, SweepMin: sweepMin, Logger: logger, Redact: rpcRedactor(cfg), Registerer: reg})
}

// defaultSweepMin is the sweep threshold of a token without sweep_min, in
// token units: 10 stablecoin units cost far more than a sweep's gas on an
// L2, and about break even on Ethereum mainnet at 30 gwei.
const defaultSweepMin = "10"

// masterSeed reads the master seed from SETTLE_MASTER_SEED (hex) or the
// configured file.
func masterSeed(cfg *fileConfig) ([]byte, error) {
	raw := os.Getenv("SETTLE_MASTER_SEED")
	if raw == "" {
		if cfg.Treasury.MasterSeedFile == "" {
			return nil, fmt.Errorf("no master seed: set SETTLE_MASTER_SEED or treasury.master_seed_file")
		}
		b, err := os.ReadFile(cfg.Treasury.MasterSeedFile)
		if err != nil {
			return nil, fmt.Errorf("reading master seed: %w", err)
		}
		raw = string(b)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("master seed is not hex: %w", err)
	}
	return seed, nil
}

// masterKeys reads the master seed and checks that its treasury is the
// configured one (filling it in when unset).
func masterKeys(cfg *fileConfig) (*hdwallet.Master, error) {
	seed, err := masterSeed(cfg)
	if err != nil {
		return nil, err
	}
	m, err := hdwallet.MasterFromSeed(seed)
	if err != nil {
		return nil, err
	}
	key, err := m.TreasuryKey()
	if err != nil {
		return nil, err
	}
	addr := crypto.PubkeyToAddress(key.PublicKey).Hex()
	if cfg.Treasury.Address != "" && !strings.EqualFold(cfg.Treasury.Address, addr) {
		return nil, fmt.Errorf("treasury.address %s does not match the master seed's treasury %s", cfg.Treasury.Address, addr)
	}
	cfg.Treasury.Address = addr
	return m, nil
}

func cmdDelivery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "deploy" {
		return cmdDeliveryDeploy(ctx, args[1:], stdout, stderr)
	}
	cfg, err := commonFlags("delivery", args, stderr, false, nil)
	if err != nil {
		return err
	}
	master, err := masterKeys(cfg)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, false)
	if err != nil {
		return err
	}
	defer d.Close()
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	if err := deliveryGroup(gctx, g, cfg, d.pg, master, d.logger, reg); err != nil {
		return err
	}
	g.Go(func() error { return serveMetrics(gctx, cfg.Delivery.MetricsListen, reg, d.logger) })
	return g.Wait()
}

// cmdDeliveryDeploy deploys the treasury's SettleExecutor on one chain and
// prints the executor_address line for its config.
func cmdDeliveryDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var chainName string
	cfg, err := commonFlags("delivery deploy", args, stderr, false, func(fs *flag.FlagSet) {
		fs.StringVar(&chainName, "chain", "", "chain name or id to deploy the executor on")
	})
	if err != nil {
		return err
	}
	cc, err := cfg.chain(chainName)
	if err != nil {
		return err
	}
	if cc.RPCURL == "" {
		return fmt.Errorf("chain %s has no rpc_url", cc.Name)
	}
	master, err := masterKeys(cfg)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, false)
	if err != nil {
		return err
	}
	defer d.Close()
	// Only the chain deployed to: another chain's executor setting may be
	// what is being fixed.
	one := *cfg
	one.Chains = []chainConfig{*cc}
	one.Chains[0].ExecutorAddress = ""
	ex, err := newDeliveryExecutor(ctx, &one, d.pg, master, d.logger, nil)
	if err != nil {
		return err
	}
	addr, err := ex.DeployExecutor(ctx, cc.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "SettleExecutor deployed and verified on %s (chain %d), owned by treasury %s.\nAdd to that chain in the config:\n  executor_address: \"%s\"\n",
		cc.Name, cc.ID, ex.Address().Hex(), addr.Hex())
	return nil
}
