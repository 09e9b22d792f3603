package schema

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// lockID is the Postgres advisory lock every migrator takes before touching
// either database, so two `settle migrate` runs (or two services starting at
// once) never apply the same migration twice. Any constant works; this one
// spells "settle".
const lockID = 0x736574746c65

// Postgres returns the embedded Postgres migrations in version order.
func Postgres() ([]Migration, error) { return load(postgresFS, "postgres", ".up.sql") }

// ClickHouse returns the embedded ClickHouse migrations in version order.
func ClickHouse() ([]Migration, error) { return load(clickhouseFS, "clickhouse", ".sql") }

func load(fsys fs.FS, dir, suffix string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s migrations: %w", dir, err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, suffix) || strings.HasSuffix(name, ".down.sql") {
			continue
		}
		num, rest, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s/%s: name must start with a positive number and '_'", dir, name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		body, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(rest, suffix), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Result tells which migrations a run applied.
type Result struct {
	Postgres   []Migration
	ClickHouse []Migration
}

// Migrate applies every pending Postgres and ClickHouse migration. It holds a
// Postgres advisory lock for the whole run, which serialises concurrent
// migrators for both databases. ch may be nil to migrate Postgres only.
func Migrate(ctx context.Context, pg *pgxpool.Pool, ch driver.Conn, logger *slog.Logger) (res Result, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := pg.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("acquiring postgres connection for migrations: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
		return res, fmt.Errorf("taking migration lock: %w", err)
	}
	defer func() {
		// The unlock must run even when ctx was cancelled mid-migration, or
		// the pooled connection would keep the lock.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID); uerr != nil && err == nil {
			err = fmt.Errorf("releasing migration lock: %w", uerr)
		}
	}()

	if res.Postgres, err = migratePostgres(ctx, conn.Conn(), logger); err != nil {
		return res, err
	}
	if ch != nil {
		if res.ClickHouse, err = migrateClickHouse(ctx, ch, logger); err != nil {
			return res, err
		}
	}
	return res, nil
}

func migratePostgres(ctx context.Context, conn *pgx.Conn, logger *slog.Logger) ([]Migration, error) {
	migrations, err := Postgres()
	if err != nil {
		return nil, err
	}
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`
	if _, err := conn.Exec(ctx, create); err != nil {
		return nil, fmt.Errorf("creating postgres schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading postgres schema_migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("reading postgres schema_migrations: %w", err)
	}
	for _, v := range versions {
		applied[int(v)] = true
	}
	var done []Migration
	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("applying postgres migration %04d_%s: %w", m.Version, m.Name, err)
		}
		logger.InfoContext(ctx, "applied postgres migration", "version", m.Version, "name", m.Name)
		done = append(done, m)
	}
	return done, nil
}

func migrateClickHouse(ctx context.Context, ch driver.Conn, logger *slog.Logger) ([]Migration, error) {
	migrations, err := ClickHouse()
	if err != nil {
		return nil, err
	}
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    UInt32,
		name       String,
		applied_at DateTime
	) ENGINE = ReplacingMergeTree() ORDER BY version`
	if err := ch.Exec(ctx, create); err != nil {
		return nil, fmt.Errorf("creating clickhouse schema_migrations: %w", err)
	}
	rows, err := ch.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading clickhouse schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading clickhouse schema_migrations: %w", err)
		}
		applied[int(v)] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading clickhouse schema_migrations: %w", err)
	}
	var done []Migration
	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		// Each file is one idempotent statement, so a crash between the
		// statement and its record only means it runs again harmlessly.
		if err := ch.Exec(ctx, m.SQL); err != nil {
			return done, fmt.Errorf("applying clickhouse migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if err := recordClickHouse(ctx, ch, m); err != nil {
			return done, fmt.Errorf("recording clickhouse migration %04d_%s: %w", m.Version, m.Name, err)
		}
		logger.InfoContext(ctx, "applied clickhouse migration", "version", m.Version, "name", m.Name)
		done = append(done, m)
	}
	return done, nil
}

// recordClickHouse inserts through a batch with named columns: clickhouse-go
// v2 hangs on a plain INSERT … VALUES against 18.16 servers.
func recordClickHouse(ctx context.Context, ch driver.Conn, m Migration) error {
	batch, err := ch.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	defer batch.Abort()
	if err := batch.Append(uint32(m.Version), m.Name, time.Now()); err != nil {
		return err
	}
	return batch.Send()
}
