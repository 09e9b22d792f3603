package store

import (
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
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

func (s listSeed) merchantOf(g int) string {
	if g%10 == 0 {
		return s.Big
	}
	return fmt.Sprintf("mer_o%d", g%1000)
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
	exec := func(q string, args ...any) {
		tb.Helper()
		if _, err := pool.Exec(ctx, q, args...); err != nil {
			tb.Fatalf("seeding: %v\n%s", err, q)
		}
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
	exec(`ANALYZE sessions, receivers, payment_methods, deposits`)
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
		sqlText, args, err := st.listSQL(c.q)
		if err != nil {
			t.Fatal(err)
		}
		var plan strings.Builder
		rows, err := pool.Query(ctx, "EXPLAIN "+sqlText, args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		// No Seq Scan on sessions is not enough: the planner would rather
		// read all of the merchant's sessions through any index on
		// merchant_id and sort them than scan the table.
		if strings.Contains(plan.String(), "Seq Scan on sessions") {
			t.Errorf("%s: plan reads all sessions:\n%s", c.name, plan.String())
		}
		if !slices.ContainsFunc(c.index, func(ix string) bool {
			return strings.Contains(plan.String(), " using "+ix+" on ") || strings.Contains(plan.String(), " on "+ix)
		}) {
			t.Errorf("%s: plan does not use %v:\n%s", c.name, c.index, plan.String())
		}
		if os.Getenv("SETTLE_LIST_PLANS") != "" {
			t.Logf("%s:\n%s", c.name, plan.String())
		}
		// And the query finds what the case means to find.
		got, err := st.ListSessions(ctx, c.q)
		if err != nil || len(got) == 0 {
			t.Errorf("%s: %d sessions, %v", c.name, len(got), err)
		}
	}
}
