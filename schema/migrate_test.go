package schema_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/schema"
)

func TestMigrationsLoad(t *testing.T) {
	for name, load := range map[string]func() ([]schema.Migration, error){"postgres": schema.Postgres, "clickhouse": schema.ClickHouse} {
		ms, err := load()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(ms) == 0 {
			t.Fatalf("%s: no migrations embedded", name)
		}
		for i, m := range ms {
			if m.Version != i+1 {
				t.Errorf("%s: migration %d has version %d; versions must be 1, 2, 3, … without gaps", name, i, m.Version)
			}
		}
	}
}

func TestMigrateTwice(t *testing.T) {
	pg, ch := dbtest.Postgres(t), dbtest.ClickHouse(t)
	ctx := context.Background()
	first, err := schema.Migrate(ctx, pg, ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	pgAll, _ := schema.Postgres()
	chAll, _ := schema.ClickHouse()
	if len(first.Postgres) != len(pgAll) || len(first.ClickHouse) != len(chAll) {
		t.Fatalf("first run applied %d+%d migrations, want %d+%d", len(first.Postgres), len(first.ClickHouse), len(pgAll), len(chAll))
	}
	second, err := schema.Migrate(ctx, pg, ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Postgres)+len(second.ClickHouse) != 0 {
		t.Errorf("second run applied %v", second)
	}
	assertRecorded(t, pg, ch, len(pgAll), len(chAll))
	for _, table := range []string{"transfers", "blocks", "reorgs", "receivers"} {
		var n uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&n); err != nil || n != 1 {
			t.Errorf("clickhouse table %s: count %d, %v", table, n, err)
		}
	}
}

func TestMigrateConcurrently(t *testing.T) {
	// Each migrator has its own pools, as separate processes would.
	pgURL, chURL := dbtest.PostgresURL(t), dbtest.ClickHouseURL(t)
	ctx := context.Background()
	const n = 4
	results := make([]schema.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		pg, ch := dbtest.OpenPostgres(t, pgURL), dbtest.OpenClickHouse(t, chURL)
		wg.Go(func() { results[i], errs[i] = schema.Migrate(ctx, pg, ch, nil) })
	}
	wg.Wait()
	applied := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
		applied += len(results[i].Postgres) + len(results[i].ClickHouse)
	}
	pgAll, _ := schema.Postgres()
	chAll, _ := schema.ClickHouse()
	if applied != len(pgAll)+len(chAll) {
		t.Errorf("concurrent migrators applied %d migrations in total, want each exactly once (%d)", applied, len(pgAll)+len(chAll))
	}
	assertRecorded(t, dbtest.OpenPostgres(t, pgURL), dbtest.OpenClickHouse(t, chURL), len(pgAll), len(chAll))
}

func assertRecorded(t *testing.T, pg *pgxpool.Pool, ch driver.Conn, wantPG, wantCH int) {
	t.Helper()
	ctx := context.Background()
	var n, distinct int
	if err := pg.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != wantPG || distinct != wantPG {
		t.Errorf("postgres schema_migrations has %d rows (%d versions), want %d", n, distinct, wantPG)
	}
	var rows, versions uint64
	if err := ch.QueryRow(ctx, "SELECT count(), uniqExact(version) FROM schema_migrations").Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(wantCH) || versions != uint64(wantCH) {
		t.Errorf("clickhouse schema_migrations has %d rows (%d versions), want %d", rows, versions, wantCH)
	}
}
