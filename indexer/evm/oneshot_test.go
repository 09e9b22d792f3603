package evm_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/schema"
)

// One-shot runs let a whole indexer process be timed from outside (for
// example with /usr/bin/time -v) against a node that SETTLE_BENCH_HOLD keeps
// up: with CHILD_FRESH=1 the child creates and migrates its own databases on
// the servers of SETTLE_POSTGRES_URL and SETTLE_CLICKHOUSE_URL (and drops
// them when it ends), and with CHILD_UNTIL=N it exits once its cursor is at
// block N.
//
//	SETTLE_TEST_INDEXER_CHILD=1 CHILD_BENCH=1 CHILD_FRESH=1 CHILD_UNTIL=501 \
//	  CHILD_RPC=http://127.0.0.1:PORT CHILD_CHAIN=31337 ./evm.test

// freshDatabases creates and migrates a Postgres and a ClickHouse database
// for a one-shot child and returns their URLs and a function dropping them.
func freshDatabases(ctx context.Context) (pgURL, chURL string, drop func(), err error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "settle_oneshot_" + hex.EncodeToString(b[:])
	pgAdmin, chAdmin := os.Getenv(dbtest.PostgresEnv), os.Getenv(dbtest.ClickHouseEnv)
	admin, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		return "", "", nil, err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", nil, err
	}
	chOpts, err := clickhouse.ParseDSN(chAdmin)
	if err != nil {
		return "", "", nil, err
	}
	chConn, err := clickhouse.Open(chOpts)
	if err != nil {
		return "", "", nil, err
	}
	defer chConn.Close()
	if err := chConn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", nil, err
	}
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, pgAdmin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
		if c, err := clickhouse.Open(chOpts); err == nil {
			_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
			_ = c.Close()
		}
	}
	withDB := func(raw string) string {
		u, _ := url.Parse(raw)
		u.Path = "/" + name
		return u.String()
	}
	pgURL, chURL = withDB(pgAdmin), withDB(chAdmin)
	pg, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		drop()
		return "", "", nil, err
	}
	defer pg.Close()
	opts, _ := clickhouse.ParseDSN(chURL)
	ch, err := clickhouse.Open(opts)
	if err != nil {
		drop()
		return "", "", nil, err
	}
	defer ch.Close()
	if _, err := schema.Migrate(ctx, pg, ch, nil); err != nil {
		drop()
		return "", "", nil, fmt.Errorf("migrating: %w", err)
	}
	return pgURL, chURL, drop, nil
}

// stopAtBlock cancels once the child's cursor reaches CHILD_UNTIL (if set).
func stopAtBlock(ctx context.Context, pg *pgxpool.Pool, cancel func()) {
	until, err := strconv.ParseInt(os.Getenv("CHILD_UNTIL"), 10, 64)
	if err != nil {
		return
	}
	go func() {
		start := time.Now()
		for ctx.Err() == nil {
			var n int64
			if err := pg.QueryRow(ctx, `SELECT number FROM indexer_cursors`).Scan(&n); err == nil && n >= until {
				fmt.Fprintf(os.Stderr, "child indexer: at block %d after %s\n", n, time.Since(start).Round(time.Millisecond))
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}
