package reconciler

import (
	"context"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/dbtest"
)

// Operator actions reach ClickHouse's ledger_operator and sweeps its
// ledger_sweeps beside the ledger's decisions, in one copy.
func TestCopyLedgerCopiesOperatorEntries(t *testing.T) {
	t.Parallel()
	db := dbtest.Migrated(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg, err := chain.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Chains: reg, Postgres: db.PG, ClickHouse: db.CH})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.PG.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if err := recordLedger(ctx, tx, entry{EntryID: "deposit:1:0xb:0xt:0", Kind: "deposit", SessionID: "s1", MerchantID: "m1", ChainID: 1,
		Token: "0xtoken", Symbol: "TUSD", Decimals: 6, From: "0xa", To: "0xb", TxHash: "0xt", Amount: big.NewInt(5), EventTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// As delivery.Retry writes it.
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, log_index, block_number, amount, event_time, operator, note)
		VALUES ('operator:retry:7:1', 'operator', 'payout_retry', 's1', 'm1', 1, '0xtoken', 'TUSD', 6, '0xa', '0xb', '', 0, 0, 0, now(), 'alice', 'node fixed')`); err != nil {
		t.Fatal(err)
	}
	// As the executor's sweepWatch writes them.
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (entry_id, kind, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, block_number, amount, event_time) VALUES
		('sweep:3', 'sweep', 's1', 'm1', 1, '0xtoken', 'TUSD', 6, '0xb', '0xtreasury', '0xs', 9, 5, now()),
		('sweep_gas:3', 'sweep_gas', 's1', 'm1', 1, '0x0000000000000000000000000000000000000000', 'native', 18, '0xtreasury', '0xb', '0xg', 0,
		 123456789012345678901234567890123456789012, now())`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if more, err := r.CopyLedger(ctx); err != nil || more {
		t.Fatalf("CopyLedger = %v, %v", more, err)
	}
	var kind string
	var n uint64
	if err := db.CH.QueryRow(ctx, `SELECT toString(any(kind)), count() FROM ledger`).Scan(&kind, &n); err != nil || n != 1 || kind != "deposit" {
		t.Errorf("ledger: %d rows of kind %q, %v; want the deposit only", n, kind, err)
	}
	var reason, operator, note, session string
	if err := db.CH.QueryRow(ctx, `SELECT reason, operator, note, session_id FROM ledger_operator WHERE entry_id = 'operator:retry:7:1'`).
		Scan(&reason, &operator, &note, &session); err != nil || reason != "payout_retry" || operator != "alice" || note != "node fixed" || session != "s1" {
		t.Errorf("ledger_operator: %q %q %q %q, %v", reason, operator, note, session, err)
	}
	rows, err := db.CH.Query(ctx, `SELECT toString(kind), amount_raw, tx_hash FROM ledger_sweeps FINAL ORDER BY kind`)
	if err != nil {
		t.Fatal(err)
	}
	var sweeps []string
	for rows.Next() {
		var k, a, h string
		if err := rows.Scan(&k, &a, &h); err != nil {
			t.Fatal(err)
		}
		sweeps = append(sweeps, k+" "+a+" "+h)
	}
	rows.Close()
	if want := []string{"sweep 5 0xs", "sweep_gas 123456789012345678901234567890123456789012 0xg"}; !slices.Equal(sweeps, want) {
		t.Errorf("ledger_sweeps %q, want %q", sweeps, want)
	}
	var uncopied int
	if err := db.PG.QueryRow(ctx, `SELECT count(*) FROM ledger_entries WHERE copied_at IS NULL`).Scan(&uncopied); err != nil || uncopied != 0 {
		t.Errorf("%d entries left uncopied, %v", uncopied, err)
	}
	if more, err := r.CopyLedger(ctx); err != nil || more {
		t.Errorf("second CopyLedger = %v, %v", more, err)
	}
}
