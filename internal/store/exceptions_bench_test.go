package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/dbtest"
)

// BenchmarkListExceptions measures a page of the exceptions inbox (21
// rows: a page of 20 and the look-ahead) for a merchant with 1,000
// exceptions and one with SETTLE_BENCH_EXCEPTIONS (default 1,000,000), at
// the first page and at a cursor half-way down: with the list's index
// (0015) a page costs the same at either size.
//
//	eval "$(scripts/services.sh env)" && go test -run='^$' -bench=BenchmarkListExceptions -benchtime=2s ./internal/store
func BenchmarkListExceptions(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("SETTLE_BENCH_EXCEPTIONS")); err == nil && v > 0 {
		n = v
	}
	db := dbtest.Migrated(b)
	ctx := context.Background()
	st := New(db.PG)
	exec := func(q string, args ...any) {
		b.Helper()
		if _, err := db.PG.Exec(ctx, q, args...); err != nil {
			b.Fatalf("seeding: %v", err)
		}
	}
	start := time.Now()
	exec(`INSERT INTO merchants (id, name) VALUES ('big', 'Big'), ('small', 'Small')`)
	// One session per 100 exceptions; entry g was recorded g seconds ago.
	seed := func(merchant string, count int) {
		exec(`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
			dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
			SELECT md5($1 || g), $1, 'expired', 'evm', '0xb', 8453, 'Base', '0xt', 'USDC', 6, '{}', 's', now(), now() + interval '1 hour'
			FROM generate_series(0, ($2 - 1) / 100) g`, merchant, count)
		for lo := 1; lo <= count; lo += 250_000 {
			exec(`INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
				from_address, to_address, tx_hash, log_index, block_number, amount, event_time, recorded_at)
				SELECT 'exception:8453:0xb' || $1 || g || ':0xt' || g || ':0', 'exception', 'late', md5($1 || (g / 100)), $1, 8453, '0xt', 'USDC', 6,
				       '0xf', '0xr', '0xt' || g, 0, g, 1000000, now(), now() - make_interval(secs => g)
				FROM generate_series($2::int, least($2::int + 249999, $3::int)) g`, merchant, lo, count)
		}
	}
	seed("small", 1000)
	seed("big", n)
	exec(`ANALYZE`)
	b.Logf("seeded %d + 1000 exceptions in %s", n, time.Since(start).Round(time.Millisecond))
	for _, m := range []struct {
		merchant string
		count    int
	}{{"small", 1000}, {"big", n}} {
		// The cursor half-way down the merchant's list.
		var mid int64
		if err := db.PG.QueryRow(ctx, `SELECT id FROM ledger_entries WHERE merchant_id = $1 AND block_number = $2`, m.merchant, m.count/2).Scan(&mid); err != nil {
			b.Fatal(err)
		}
		cursor, err := st.ExceptionCursorOf(ctx, m.merchant, fmt.Sprintf("exc_%d", mid))
		if err != nil {
			b.Fatal(err)
		}
		for _, page := range []struct {
			name  string
			after ExceptionCursor
			f     ExceptionFilter
		}{{"first", ExceptionCursor{}, ExceptionFilter{}}, {"middle", cursor, ExceptionFilter{}}, {"open_late", cursor, ExceptionFilter{Status: "open", Reason: "late"}}} {
			b.Run(fmt.Sprintf("%s_%d/%s", m.merchant, m.count, page.name), func(b *testing.B) {
				for b.Loop() {
					rows, err := st.ListExceptions(ctx, m.merchant, page.f, page.after, 21)
					if err != nil || len(rows) != 21 {
						b.Fatalf("%d rows, %v", len(rows), err)
					}
				}
			})
		}
	}
}
