package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/redact"
)

func cmdIndexer(ctx context.Context, args []string, stderr io.Writer) error {
	var chainName *string
	cfg, err := commonFlags("indexer", args, stderr, false, func(fs *flag.FlagSet) {
		chainName = fs.String("chain", "", "chain name or id from the config (required)")
	})
	if err != nil {
		return err
	}
	if *chainName == "" {
		return fmt.Errorf("indexer: -chain is required")
	}
	cc, err := cfg.chain(*chainName)
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
	if err := indexerGroup(gctx, g, cc, pg, ch, logger, reg); err != nil {
		return err
	}
	g.Go(func() error { return serveMetrics(gctx, cfg.Indexer.MetricsListen, reg, logger) })
	return g.Wait()
}

// indexerGroup adds one chain's indexer to g.
func indexerGroup(ctx context.Context, g *errgroup.Group, cc *chainConfig, pg *pgxpool.Pool, ch driver.Conn, logger *slog.Logger, reg prometheus.Registerer) error {
	if cc.Family != "evm" {
		return fmt.Errorf("chain %s: no indexer for family %q yet", cc.Name, cc.Family)
	}
	if cc.RPCURL == "" {
		return fmt.Errorf("chain %s: rpc_url is not set (config or SETTLE_CHAIN_%d_RPC_URL)", cc.Name, cc.ID)
	}
	src, err := evm.New(ctx, evm.Config{URL: cc.RPCURL, ChainName: cc.Name, Registerer: reg})
	if err != nil {
		return err
	}
	id, err := src.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("chain %s: %w", cc.Name, err)
	}
	if id != cc.ID {
		return fmt.Errorf("chain %s: the node at %s is chain %d, the config says %d", cc.Name, redact.Text(cc.RPCURL), id, cc.ID)
	}
	r, err := indexer.New(indexer.Config{
		ChainID: cc.ID, ChainName: cc.Name, Source: src, Postgres: pg, ClickHouse: ch,
		StartBlock: cc.StartBlock, MaxReorgDepth: cc.MaxReorgDepth, RangeBlocks: cc.RangeBlocks,
		Workers: cc.Workers, PollInterval: cc.PollInterval, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return err
	}
	g.Go(func() error {
		defer src.Close()
		if err := r.Run(ctx); err != nil {
			return fmt.Errorf("indexer %s: %w", cc.Name, err)
		}
		return nil
	})
	return nil
}
