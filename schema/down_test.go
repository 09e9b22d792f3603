package schema_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/schema"
)

// applyFiles runs the Postgres migration files of versions >= from with
// suffix (".up.sql" or ".down.sql") in version order (reversed for down),
// as an operator would by hand, all in one transaction.
func applyFiles(t *testing.T, pg *pgxpool.Pool, from int, suffix string) error {
	t.Helper()
	ms, err := schema.Postgres()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, m := range ms {
		if m.Version >= from {
			files = append(files, filepath.Join("postgres", fmt.Sprintf("%04d_%s%s", m.Version, m.Name, suffix)))
		}
	}
	if suffix == ".down.sql" {
		slices.Reverse(files)
	}
	ctx := context.Background()
	tx, err := pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return tx.Commit(ctx)
}

// 0006 (payout actions) rolls back and forward again: abandoned payouts go
// back to needs_attention, operator entries already in ClickHouse leave
// Postgres, and entries not copied yet stop the rollback.
func TestPayoutActionsDownAndUp(t *testing.T) {
	db := dbtest.Migrated(t)
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if _, err := db.PG.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO merchants (id, name) VALUES ('m', 'M')`)
	exec(`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ('0123456789abcdef0123456789abcdef', 'm', 'processing', 'evm', '0xb', 1, 'c', '0xt', 'T', 6, '{}', 's', now(), now() + interval '1 hour')`)
	exec(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status, error)
		VALUES ('0123456789abcdef0123456789abcdef', 'delivery', 1, '0xt', '0xb', 1, 'abandoned', 'why')`)
	exec(`INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, amount, event_time, operator, note)
		VALUES ('operator:abandon:1:1', 'operator', 'payout_abandon', '0123456789abcdef0123456789abcdef', 'm', 1, '0xt', 'T', 6, '', '0xb', '', 0, now(), 'op', 'by hand')`)
	if err := applyFiles(t, db.PG, 6, ".down.sql"); err == nil || !strings.Contains(err.Error(), "not yet copied") {
		t.Fatalf("rollback with an uncopied operator entry: %v, want a refusal", err)
	}
	exec(`UPDATE ledger_entries SET copied_at = now()`)
	if err := applyFiles(t, db.PG, 6, ".down.sql"); err != nil {
		t.Fatalf("rolling back 0006 and later: %v", err)
	}
	var status string
	var entries int
	if err := db.PG.QueryRow(ctx, `SELECT status, (SELECT count(*) FROM ledger_entries) FROM payouts`).Scan(&status, &entries); err != nil {
		t.Fatal(err)
	}
	if status != "needs_attention" || entries != 0 {
		t.Errorf("after rollback: payout %s, %d ledger entries; want needs_attention and none", status, entries)
	}
	if _, err := db.PG.Exec(ctx, `UPDATE payouts SET status = 'abandoned'`); err == nil {
		t.Error("after rollback, 'abandoned' is still allowed")
	}
	if err := applyFiles(t, db.PG, 6, ".up.sql"); err != nil {
		t.Fatalf("migrating 0006 and later up again: %v", err)
	}
	exec(`UPDATE payouts SET status = 'abandoned'`)
}
