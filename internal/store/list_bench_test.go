package store

import (
	"context"
	"crypto/md5"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/schema"
)

// listSeed describes a bulk-inserted population of sessions. Session g
// (1..N) was created g seconds before Base, so g=1 is the newest. Every
// tenth belongs to Big (a large merchant's realistic share); the rest to
// 1,000 other merchants. The newest hour has open sessions; older ones are
// terminal, as the expiry loop leaves them.
type listSeed struct {
	N    int
	Big  string
	Base time.Time
	// ReceiverEvery and DepositEvery (multiples of 10, so Big's) say
	// which sessions have a receiver and which a deposit too.
	ReceiverEvery, DepositEvery int
}

// sessionID, paymentID and friends are what seed gives session g.
func seedSessionID(g int) string { return fmt.Sprintf("%x", md5.Sum([]byte(strconv.Itoa(g)))) }

// seed inserts the population with generate_series, in chunks (one
// statement each), then ANALYZEs. Every 4th session is a payment (with
// externalId "ext-g"), every ReceiverEvery-th has a receiver ("0x" + g in
// 40 hex digits) and every DepositEvery-th a deposit in transaction 0x + g
// in 64 hex digits.
func (s listSeed) seed(ctx context.Context, tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	conn, err := pool.Acquire(ctx) // one connection, for its settings
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Release()
	spent := map[string]time.Duration{}
	exec := func(q string, args ...any) {
		tb.Helper()
		t0 := time.Now()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			tb.Fatalf("seeding: %v\n%s", err, q)
		}
		spent[strings.Fields(q)[0]+" "+strings.Fields(q)[2]] += time.Since(t0)
	}
	defer func() {
		if s.N >= 1_000_000 {
			tb.Logf("seed time by statement: %v", spent)
		}
	}()
	// Inserting millions of rows into eight indexes a row at a time is
	// most of a seed's time: drop the indexes that no constraint needs and
	// build them again from their own definitions afterwards.
	var indexDefs []string
	rows, err := conn.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = 'sessions'
		AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`)
	if err != nil {
		tb.Fatal(err)
	}
	var dropIndexes []string
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			tb.Fatal(err)
		}
		dropIndexes, indexDefs = append(dropIndexes, name), append(indexDefs, def)
	}
	if rows.Err() != nil {
		tb.Fatal(rows.Err())
	}
	exec(`SET maintenance_work_mem = '256MB'`)
	for _, name := range dropIndexes {
		exec(`DROP INDEX ` + name)
	}
	exec(`INSERT INTO merchants (id, name) SELECT 'mer_o' || g, 'other' FROM generate_series(0, 999) g ON CONFLICT DO NOTHING`)
	exec(`INSERT INTO merchants (id, name) VALUES ($1, 'big') ON CONFLICT DO NOTHING`, s.Big)
	const chunk = 500_000
	for lo := 1; lo <= s.N; lo += chunk {
		hi := min(lo+chunk-1, s.N)
		// The id is md5 of g (seedSessionID), so ids are not in g order.
		exec(`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
			dest_token_address, dest_token_symbol, dest_token_decimals, dest_amount_units, dest_amount_raw,
			display, metadata, client_secret, created_at, expires_at, payment_id, external_id)
		SELECT md5(g::text),
			CASE WHEN g % 10 = 0 THEN $3 ELSE 'mer_o' || (g % 1000) END,
			(CASE WHEN g <= 3000 AND g / 20 % 20 = 0 THEN 'requires_payment_method'
				WHEN g <= 3000 AND g / 20 % 20 = 1 THEN 'waiting_payment'
				WHEN g / 20 % 20 = 2 THEN 'processing' WHEN g / 20 % 20 = 3 THEN 'bounced'
				WHEN g / 20 % 20 < 10 THEN 'expired' ELSE 'succeeded' END)::session_status,
			'evm', '0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed', 8453, 'Base',
			'0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', 'USDC', 6, '1.00', 1000000,
			'{"title":"t","verb":"Deposit"}', jsonb_build_object('orderId', g::text), 's',
			$4::timestamptz - g * interval '1 second', $4::timestamptz - g * interval '1 second' + interval '1 hour',
			CASE WHEN g % 4 = 0 THEN translate(md5('p' || g), '0', 'z') END,
			CASE WHEN g % 4 = 0 THEN 'ext-' || g END
		FROM generate_series($1::bigint, $2::bigint) g`, lo, hi, s.Big, s.Base)
		exec(`INSERT INTO receivers (family, address, derivation_index, session_id, merchant_id, mirrored_at)
		SELECT 'evm', '0x' || lpad(to_hex(g), 40, '0'), g, md5(g::text),
			CASE WHEN g % 10 = 0 THEN $3 ELSE 'mer_o' || (g % 1000) END, now()
		FROM generate_series($1::bigint, $2::bigint) g WHERE g % $4 = 0`, lo, hi, s.Big, s.ReceiverEvery)
		exec(`INSERT INTO payment_methods (session_id, type, receiver_id, created_at)
		SELECT r.session_id, 'evm', r.id, $3::timestamptz - r.derivation_index * interval '1 second'
		FROM receivers r WHERE r.derivation_index BETWEEN $1 AND $2`, lo, hi, s.Base)
		exec(`INSERT INTO deposits (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token, from_address,
			to_address, amount, receiver_id, session_id, credited, status)
		SELECT 8453, r.derivation_index, '0x' || lpad(to_hex(r.derivation_index), 64, '0'), now(), '0x' || lpad(to_hex(r.derivation_index), 64, '0'), 0,
			'0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', '0x03', r.address, 1000000, r.id, r.session_id, true, 'final'
		FROM receivers r WHERE r.derivation_index BETWEEN $1 AND $2 AND r.derivation_index % $3 = 0`, lo, hi, s.DepositEvery)
	}
	for _, def := range indexDefs {
		exec(def)
	}
	exec(`VACUUM ANALYZE sessions, receivers, payment_methods, deposits`)
}

// listCase is one list query the index test and the benchmark run.
type listCase struct {
	name string
	q    ListQuery
	// index is the index that must find the page's rows (any of these).
	index []string
}

// listCases are the main list queries over a seeded population, for its
// big merchant: the first page, a deep cursor (half-way through), and each
// filter.
func (s listSeed) cases() []listCase {
	deep := s.N / 2 / 10 * 10 // a session of Big half-way back
	recv := s.N / 3 / s.ReceiverEvery * s.ReceiverEvery
	dep := s.N / 3 / s.DepositEvery * s.DepositEvery
	pay := s.N / 2 / 20 * 20 // a payment of Big
	now := s.Base
	q := func(q ListQuery) ListQuery { q.MerchantID, q.Limit, q.Now = s.Big, 21, now; return q }
	const (
		main    = "sessions_merchant_list_idx"
		status  = "sessions_merchant_status_list_idx"
		open    = "sessions_open_expiry_idx"
		payList = "payments_merchant_list_idx"
		payStat = "payments_merchant_status_list_idx"
	)
	return []listCase{
		{"first page", q(ListQuery{}), []string{main}},
		{"deep cursor", q(ListQuery{StartingAfter: seedSessionID(deep)}), []string{main}},
		{"status succeeded", q(ListQuery{Statuses: []session.Status{session.Succeeded}}), []string{status}},
		{"status waiting_payment (expiry on read)", q(ListQuery{Statuses: []session.Status{session.WaitingPayment}}), []string{status, open}},
		{"status expired,bounced deep", q(ListQuery{Statuses: []session.Status{session.Expired, session.Bounced}, StartingAfter: seedSessionID(deep)}), []string{status}},
		{"created range", q(ListQuery{CreatedGTE: s.Base.Add(-time.Duration(deep) * time.Second), CreatedLT: s.Base.Add(-time.Duration(deep/2) * time.Second)}), []string{main}},
		{"receiver address", q(ListQuery{ReceiverAddress: fmt.Sprintf("0x%040X", recv)}), []string{"receivers_family_address_key"}},
		{"deposit tx hash", q(ListQuery{DepositTxHash: fmt.Sprintf("0x%064x", dep)}), []string{"deposits_tx_hash_idx"}},
		{"externalId", q(ListQuery{Payments: true, ExternalID: fmt.Sprintf("ext-%d", pay)}), []string{"sessions_merchant_external_id_idx"}},
		{"metadata", q(ListQuery{Metadata: map[string]string{"orderId": fmt.Sprint(deep)}}), []string{"sessions_metadata_idx"}},
		{"payments first page", q(ListQuery{Payments: true}), []string{payList}},
		{"payments status payment_completed", q(ListQuery{Payments: true, Statuses: []session.Status{session.Succeeded}}), []string{payStat}},
	}
}

// explain returns the plan of q's statement under the EXPLAIN prefix.
func explain(ctx context.Context, tb testing.TB, st *Store, q ListQuery, prefix string) string {
	tb.Helper()
	sqlText, args, err := st.listSQL(q)
	if err != nil {
		tb.Fatal(err)
	}
	rows, err := st.pool.Query(ctx, prefix+sqlText, args...)
	if err != nil {
		tb.Fatalf("explaining %+v: %v", q, err)
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			tb.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if rows.Err() != nil {
		tb.Fatal(rows.Err())
	}
	return plan.String()
}

// Every main list query walks an index, on a population large enough that
// the planner would rather scan the table if no index served.
func TestListQueriesUseIndexes(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.Migrated(t).PG
	// Dense receivers and deposits, so that reading those tables whole
	// would cost the planner more than their indexes.
	seed := listSeed{N: 20_000, Big: "mer_big", Base: time.Unix(1_700_000_000, 0), ReceiverEvery: 10, DepositEvery: 10}
	seed.seed(ctx, t, pool)
	st := New(pool).ExpectChains(8453)
	for _, c := range seed.cases() {
		plan := explain(ctx, t, st, c.q, "EXPLAIN ")
		// No Seq Scan on sessions is not enough: the planner would rather
		// read all of the merchant's sessions through any index on
		// merchant_id and sort them than scan the table.
		if strings.Contains(plan, "Seq Scan on sessions") {
			t.Errorf("%s: plan reads all sessions:\n%s", c.name, plan)
		}
		if !slices.ContainsFunc(c.index, func(ix string) bool {
			return strings.Contains(plan, " using "+ix+" on ") || strings.Contains(plan, " on "+ix)
		}) {
			t.Errorf("%s: plan does not use %v:\n%s", c.name, c.index, plan)
		}
		if os.Getenv("SETTLE_LIST_PLANS") != "" {
			t.Logf("%s:\n%s", c.name, plan)
		}
		// And the query finds what the case means to find.
		got, err := st.ListSessions(ctx, c.q)
		if err != nil || len(got) == 0 {
			t.Errorf("%s: %d sessions, %v", c.name, len(got), err)
		}
	}
}

// BenchmarkListSessions measures one page (20 sessions) of each main list
// query for the big merchant at 1,000 and at 10 million sessions
// (SETTLE_BENCH_LIST_N overrides the larger size), alternating between the
// two databases within each case so both see the same machine state, and
// reports both latencies and their ratio. Run it with `make bench-lists`.
func BenchmarkListSessions(b *testing.B) {
	ctx := context.Background()
	bigN := 10_000_000
	if v := os.Getenv("SETTLE_BENCH_LIST_N"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10_000 {
			b.Fatalf("SETTLE_BENCH_LIST_N=%q: want an integer of at least 10000", v)
		}
		bigN = n
	}
	type db struct {
		label string
		st    *Store
		cases []listCase
	}
	var dbs []db
	for _, n := range []int{1_000, bigN} {
		seed := listSeed{N: n, Big: "mer_big", Base: time.Unix(1_700_000_000, 0), ReceiverEvery: 100, DepositEvery: 1000}
		if n < 10_000 {
			seed.ReceiverEvery, seed.DepositEvery = 10, 10 // some of each at 1,000 too
		}
		pool := seed.benchDB(ctx, b)
		dbs = append(dbs, db{fmt.Sprint(n), New(pool).ExpectChains(8453), seed.cases()})
	}
	if os.Getenv("SETTLE_LIST_PLANS") != "" {
		for _, d := range dbs {
			for _, c := range d.cases {
				b.Logf("%s at %s:\n%s", c.name, d.label, explain(ctx, b, d.st, c.q, "EXPLAIN (ANALYZE, BUFFERS) "))
			}
		}
	}
	for i := range dbs[0].cases {
		name := dbs[0].cases[i].name
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			var spent [2]time.Duration
			for _, d := range dbs { // warm up: plan caches, buffers
				if _, err := d.st.ListSessions(ctx, d.cases[i].q); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				for j, d := range dbs {
					t0 := time.Now()
					rows, err := d.st.ListSessions(ctx, d.cases[i].q)
					spent[j] += time.Since(t0)
					if err != nil || len(rows) == 0 {
						b.Fatalf("%s at %s: %d rows, %v", name, d.label, len(rows), err)
					}
				}
			}
			small := float64(spent[0].Microseconds()) / float64(b.N)
			large := float64(spent[1].Microseconds()) / float64(b.N)
			b.ReportMetric(small, "µs/page@"+dbs[0].label)
			b.ReportMetric(large, "µs/page@"+dbs[1].label)
			b.ReportMetric(large/small, "ratio")
			b.ReportMetric(0, "ns/op") // both sides are reported above
		})
	}
}

// listSeedVersion names the seed's shape; change it whenever seed changes,
// so kept benchmark databases are seeded again.
const listSeedVersion = 1

// benchDB returns a migrated database holding the seed. The database is
// kept between runs (settle_bench_lists_<N>, a few GB at 10 million
// sessions; seeding that takes minutes) and reused while its seed version
// matches; SETTLE_BENCH_LIST_FRESH=1 seeds it again. Drop it with
// psql -c 'DROP DATABASE settle_bench_lists_10000000'.
func (s listSeed) benchDB(ctx context.Context, b *testing.B) *pgxpool.Pool {
	b.Helper()
	admin := os.Getenv(dbtest.PostgresEnv)
	if admin == "" {
		if os.Getenv("CI") == "true" {
			b.Fatalf("%s is not set", dbtest.PostgresEnv)
		}
		b.Skipf("%s is not set; run `make bench-lists`", dbtest.PostgresEnv)
	}
	name := fmt.Sprintf("settle_bench_lists_%d", s.N)
	u, err := url.Parse(admin)
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/" + name
	adminConn, err := pgx.Connect(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	defer adminConn.Close(ctx)
	var exists bool
	if err := adminConn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		b.Fatal(err)
	}
	if exists && os.Getenv("SETTLE_BENCH_LIST_FRESH") == "" {
		pool := dbtest.OpenPostgres(b, u.String())
		var version int
		err := pool.QueryRow(ctx, `SELECT version FROM bench_seed WHERE n = $1`, s.N).Scan(&version)
		if err == nil && version == listSeedVersion {
			if _, err := schema.Migrate(ctx, pool, nil, nil); err != nil {
				b.Fatalf("migrating %s: %v", name, err)
			}
			b.Logf("reusing %s (SETTLE_BENCH_LIST_FRESH=1 seeds it again)", name)
			return pool
		}
		pool.Close()
	}
	if _, err := adminConn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		b.Fatal(err)
	}
	if _, err := adminConn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		b.Fatal(err)
	}
	pool := dbtest.OpenPostgres(b, u.String())
	if _, err := schema.Migrate(ctx, pool, nil, nil); err != nil {
		b.Fatalf("migrating %s: %v", name, err)
	}
	start := time.Now()
	s.seed(ctx, b, pool)
	// Recorded last: an interrupted seed is seeded again next time.
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_seed (n bigint PRIMARY KEY, version int NOT NULL);
		INSERT INTO bench_seed VALUES (`+strconv.Itoa(s.N)+`, `+strconv.Itoa(listSeedVersion)+`)`); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d sessions into %s in %s", s.N, name, time.Since(start).Round(time.Second))
	return pool
}
