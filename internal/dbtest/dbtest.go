// Package dbtest gives each test its own fresh Postgres and ClickHouse
// database on the local servers that `scripts/services.sh up` starts, and
// drops them when the test ends.
//
// The servers are found through SETTLE_POSTGRES_URL and SETTLE_CLICKHOUSE_URL
// (`make test` sets both). Without them a test skips with a message saying how
// to start the servers; with CI=true it fails instead, so CI can never pass by
// skipping.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/schema"
)

// Env names for the admin connection URLs of the test servers.
const (
	PostgresEnv   = "SETTLE_POSTGRES_URL"
	ClickHouseEnv = "SETTLE_CLICKHOUSE_URL"
)

func adminURL(tb testing.TB, env string) string {
	tb.Helper()
	u := os.Getenv(env)
	if u == "" {
		msg := fmt.Sprintf("%s is not set; run `make test`, or `scripts/services.sh up` and `eval $(scripts/services.sh env)`", env)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return u
}

func newName() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "settle_test_" + hex.EncodeToString(b[:])
}

// PostgresURL creates an empty Postgres database and returns its URL.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	admin := adminURL(tb, PostgresEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("connecting to test postgres: %v", err)
	}
	defer conn.Close(ctx)
	name := newName()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("creating postgres database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("connecting to drop postgres database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("dropping postgres database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("parsing %s: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

// ClickHouseURL creates an empty ClickHouse database and returns its URL.
func ClickHouseURL(tb testing.TB) string {
	tb.Helper()
	admin := adminURL(tb, ClickHouseEnv)
	conn := openClickHouse(tb, admin)
	defer conn.Close()
	name := newName()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("creating clickhouse database: %v", err)
	}
	tb.Cleanup(func() {
		conn := openClickHouse(tb, admin)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			tb.Errorf("dropping clickhouse database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("parsing %s: %v", ClickHouseEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

func openClickHouse(tb testing.TB, dsn string) driver.Conn {
	tb.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		tb.Fatalf("parsing clickhouse url: %v", err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		tb.Fatalf("opening clickhouse: %v", err)
	}
	return conn
}

// Postgres returns a pool on a fresh, empty Postgres database.
func Postgres(tb testing.TB) *pgxpool.Pool { return OpenPostgres(tb, PostgresURL(tb)) }

// ClickHouse returns a connection to a fresh, empty ClickHouse database.
func ClickHouse(tb testing.TB) driver.Conn { return OpenClickHouse(tb, ClickHouseURL(tb)) }

// OpenPostgres opens a pool on url, closed when the test ends (before the
// database is dropped: cleanups run last-registered first).
func OpenPostgres(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatalf("opening postgres pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// OpenClickHouse opens a connection to url, closed when the test ends.
func OpenClickHouse(tb testing.TB, url string) driver.Conn {
	tb.Helper()
	conn := openClickHouse(tb, url)
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// DBs are a migrated pair of fresh databases.
type DBs struct {
	PG            *pgxpool.Pool
	CH            driver.Conn
	PostgresURL   string
	ClickHouseURL string
}

// Migrated returns fresh Postgres and ClickHouse databases with every
// migration applied.
func Migrated(tb testing.TB) DBs {
	tb.Helper()
	d := DBs{PostgresURL: PostgresURL(tb), ClickHouseURL: ClickHouseURL(tb)}
	d.PG, d.CH = OpenPostgres(tb, d.PostgresURL), OpenClickHouse(tb, d.ClickHouseURL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := schema.Migrate(ctx, d.PG, d.CH, nil); err != nil {
		tb.Fatalf("migrating test databases: %v", err)
	}
	return d
}
