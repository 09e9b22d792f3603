package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// deps are the logger and database connections a command works with.
type deps struct {
	logger *slog.Logger
	pg     *pgxpool.Pool
	ch     driver.Conn // nil unless asked for
}

// openDeps builds the logger and opens Postgres, and ClickHouse when withCH.
func openDeps(ctx context.Context, cfg *fileConfig, stderr io.Writer, withCH bool) (*deps, error) {
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return nil, err
	}
	d := &deps{logger: logger}
	if d.pg, err = openPostgres(ctx, cfg.PostgresURL); err != nil {
		return nil, err
	}
	if withCH {
		if d.ch, err = openClickHouse(ctx, cfg.ClickHouseURL); err != nil {
			d.pg.Close()
			return nil, err
		}
	}
	return d, nil
}

// Close closes what openDeps opened.
func (d *deps) Close() {
	if d.ch != nil {
		d.ch.Close()
	}
	d.pg.Close()
}

func openPostgres(ctx context.Context, url string) (*pgxpool.Pool, error) {
	if url == "" {
		return nil, fmt.Errorf("postgres_url is not set (config or SETTLE_POSTGRES_URL)")
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("opening postgres: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres: %w", err)
	}
	return pool, nil
}

func openClickHouse(ctx context.Context, url string) (driver.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("clickhouse_url is not set (config or SETTLE_CLICKHOUSE_URL)")
	}
	opts, err := clickhouse.ParseDSN(url)
	if err != nil {
		return nil, fmt.Errorf("parsing clickhouse url: %w", err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.Ping(pingCtx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to clickhouse: %w", err)
	}
	return conn, nil
}

// newRegistry returns a metrics registry with the Go runtime and process
// collectors, as every settle process exposes them.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics on addr until ctx is done.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for metrics: %w", err)
	}
	return serveMetricsOn(ctx, ln, reg, logger)
}

// metricsGroup listens on addr at once (so a port in use fails the start,
// and the bound address can be printed) and adds the /metrics server to g.
func metricsGroup(ctx context.Context, g *errgroup.Group, addr string, reg *prometheus.Registry, logger *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics: %w", err)
	}
	g.Go(func() error { return serveMetricsOn(ctx, ln, reg, logger) })
	return ln.Addr(), nil
}

// serveMetricsOn serves /metrics on ln until ctx is done.
func serveMetricsOn(ctx context.Context, ln net.Listener, reg *prometheus.Registry, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	logger.InfoContext(ctx, "metrics listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}
