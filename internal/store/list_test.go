package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
)

// listFixture creates sessions for the list tests.
type listFixture struct {
	t   *testing.T
	ctx context.Context
	st  *Store
	n   atomic.Int64
}

func newListFixture(t *testing.T) *listFixture {
	return &listFixture{t: t, ctx: context.Background(), st: New(dbtest.Migrated(t).PG)}
}

func (f *listFixture) merchant() string {
	f.t.Helper()
	m, err := f.st.CreateMerchant(f.ctx, "m")
	if err != nil {
		f.t.Fatal(err)
	}
	return m.ID
}

type sessionOpts struct {
	status   session.Status
	created  time.Time
	ttl      time.Duration
	metadata map[string]string
	payment  string // externalId; "" with payment true for none
	isPay    bool
}

// session inserts a session and returns its id (and its payment id if
// o.isPay).
func (f *listFixture) session(merchantID string, o sessionOpts) (string, string) {
	f.t.Helper()
	n := f.n.Add(1)
	ss := &session.Session{
		ID: fmt.Sprintf("%032x", n), MerchantID: merchantID, Status: o.status,
		Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
			ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC", AmountUnits: "1"},
		Display: session.Display{Title: "t", Verb: "Deposit"}, Metadata: o.metadata, ClientSecret: "s",
		CreatedAt: o.created, ExpiresAt: o.created.Add(cmpOr(o.ttl, time.Hour)),
	}
	if ss.Status == "" {
		ss.Status = session.RequiresPaymentMethod
	}
	if o.isPay {
		// Base58 has no 0.
		ss.Payment = &session.Payment{ID: strings.ReplaceAll(fmt.Sprintf("P%031d", n), "0", "z"), ExternalID: o.payment}
		if _, _, err := f.st.CreatePayment(f.ctx, ss, 6); err != nil {
			f.t.Fatal(err)
		}
		return ss.ID, ss.Payment.ID
	}
	if err := f.st.CreateSession(f.ctx, ss, 6); err != nil {
		f.t.Fatal(err)
	}
	return ss.ID, ""
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// receiver gives session id the EVM receiver address (lowercase) and a
// deposit to it in transaction txHash ("" for none).
func (f *listFixture) receiver(id, address, txHash string) {
	f.t.Helper()
	derive := func(uint32) (string, error) { return address, nil }
	_, r, err := f.st.SetReceiverPaymentMethod(f.ctx, id, "evm", "evm", derive, time.Unix(1_700_000_000, 0))
	if err != nil {
		f.t.Fatal(err)
	}
	if txHash == "" {
		return
	}
	const q = `INSERT INTO deposits (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token, from_address,
		to_address, amount, receiver_id, session_id, credited) VALUES (8453, 1, '0x01', now(), $1, 0, '0x02', '0x03', $2, 1, $3, $4, true)`
	if _, err := f.st.pool.Exec(f.ctx, q, txHash, address, r.ID, id); err != nil {
		f.t.Fatal(err)
	}
}

// all pages through q (Limit is the page size) as the API does, and
// returns the ids in order.
func (f *listFixture) all(q ListQuery) []string {
	f.t.Helper()
	var ids []string
	pageSize := q.Limit
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			f.t.Fatal("paging does not end")
		}
		q.Limit = pageSize + 1
		rows, err := f.st.ListSessions(f.ctx, q)
		if err != nil {
			f.t.Fatalf("page %d after %q: %v", pages, q.StartingAfter, err)
		}
		more := len(rows) > pageSize
		if more {
			rows = rows[:pageSize]
		}
		for _, ss := range rows {
			ids = append(ids, ss.ID)
		}
		if !more {
			return ids
		}
		q.StartingAfter = rows[len(rows)-1].ID
		if q.Payments {
			q.StartingAfter = rows[len(rows)-1].Payment.ID
		}
	}
}

// Paging through every page returns the merchant's sessions exactly once,
// newest first with id breaking ties, and none of another merchant's; a
// cursor that is not the merchant's is ErrNotFound.
func TestListSessionsPages(t *testing.T) {
	f := newListFixture(t)
	a, b := f.merchant(), f.merchant()
	base := time.Unix(1_700_000_000, 0)
	type row struct {
		id      string
		created time.Time
	}
	var want []row
	for i := range 57 {
		created := base.Add(time.Duration(i/4) * time.Second) // ties of four
		id, _ := f.session(a, sessionOpts{created: created})
		want = append(want, row{id, created})
	}
	otherID, _ := f.session(b, sessionOpts{created: base})
	slices.SortFunc(want, func(x, y row) int {
		if c := y.created.Compare(x.created); c != 0 {
			return c
		}
		return strings.Compare(y.id, x.id)
	})
	var wantIDs []string
	for _, r := range want {
		wantIDs = append(wantIDs, r.id)
	}
	for _, size := range []int{1, 4, 7, 56, 57, 100} {
		if got := f.all(ListQuery{MerchantID: a, Limit: size}); !slices.Equal(got, wantIDs) {
			t.Errorf("page size %d: got %d ids %v\nwant %v", size, len(got), got, wantIDs)
		}
	}
	if got := f.all(ListQuery{MerchantID: b, Limit: 10}); !slices.Equal(got, []string{otherID}) {
		t.Errorf("merchant b: %v", got)
	}
	for _, cursor := range []string{otherID, strings.Repeat("f", 32), "not-an-id"} {
		if _, err := f.st.ListSessions(f.ctx, ListQuery{MerchantID: a, Limit: 5, StartingAfter: cursor}); !errorIsNotFound(err) {
			t.Errorf("cursor %s: err = %v, want ErrNotFound", cursor, err)
		}
	}
	// After the last session: an empty page, not an error.
	rows, err := f.st.ListSessions(f.ctx, ListQuery{MerchantID: a, Limit: 5, StartingAfter: wantIDs[len(wantIDs)-1]})
	if err != nil || len(rows) != 0 {
		t.Errorf("after the last: %d rows, %v", len(rows), err)
	}
	// A session id is no payment cursor.
	if _, err := f.st.ListSessions(f.ctx, ListQuery{MerchantID: a, Payments: true, Limit: 5, StartingAfter: wantIDs[0]}); !errorIsNotFound(err) {
		t.Errorf("session id as payment cursor: %v", err)
	}
}

func errorIsNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), ErrNotFound.Error())
}

// Each filter returns exactly the sessions it names; the status filter
// agrees with what GetSession(...).StatusAt(now) reports, expiry on read
// included.
func TestListSessionsFilters(t *testing.T) {
	f := newListFixture(t)
	a, b := f.merchant(), f.merchant()
	base := time.Unix(1_700_000_000, 0)
	now := base.Add(90 * time.Minute)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	ids := map[string]string{}
	mk := func(name, merchant string, o sessionOpts) {
		id, _ := f.session(merchant, o)
		ids[name] = id
	}
	// Open, not past the deadline at now; open past it (reads expired);
	// waiting with a receiver past it; and every stored status.
	mk("rpm-open", a, sessionOpts{created: at(60)})
	mk("rpm-late", a, sessionOpts{created: at(0), metadata: map[string]string{"orderId": "123", "plan": "pro"}})
	mk("rpm-edge", a, sessionOpts{created: at(30)}) // expires at now exactly: expired
	mk("wp-open", a, sessionOpts{created: at(61)})
	mk("wp-late", a, sessionOpts{created: at(1)})
	mk("processing", a, sessionOpts{created: at(2), status: session.Processing, metadata: map[string]string{"orderId": "123"}})
	mk("succeeded", a, sessionOpts{created: at(3), status: session.Succeeded, metadata: map[string]string{"orderId": "124", "plan": "pro"}})
	mk("bounced", a, sessionOpts{created: at(4), status: session.Bounced})
	mk("expired", a, sessionOpts{created: at(5), status: session.Expired})
	mk("other", b, sessionOpts{created: at(6), metadata: map[string]string{"orderId": "123"}})
	payID, _ := f.session(a, sessionOpts{created: at(7), isPay: true, payment: "ext-1", metadata: map[string]string{"orderId": "123"}})
	ids["payment"] = payID
	otherPay, _ := f.session(b, sessionOpts{created: at(8), isPay: true, payment: "ext-1"})
	ids["other-payment"] = otherPay
	f.receiver(ids["wp-open"], "0x00000000000000000000000000000000000000aa", "0x"+strings.Repeat("ab", 32))
	f.receiver(ids["wp-late"], "0x00000000000000000000000000000000000000bb", "")
	f.receiver(ids["other"], "0x00000000000000000000000000000000000000cc", "0x"+strings.Repeat("cd", 32))

	named := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, ids[n])
		}
		slices.Sort(out)
		return out
	}
	list := func(st *Store, q ListQuery) []string {
		t.Helper()
		q.MerchantID, q.Limit, q.Now = a, 100, now
		rows, err := st.ListSessions(f.ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		var out []string
		for _, ss := range rows {
			out = append(out, ss.ID)
		}
		slices.Sort(out)
		return out
	}
	// The filters other than status.
	for _, tc := range []struct {
		name string
		q    ListQuery
		want []string
	}{
		{"none", ListQuery{}, named("rpm-open", "rpm-late", "rpm-edge", "wp-open", "wp-late", "processing", "succeeded", "bounced", "expired", "payment")},
		{"created_gte", ListQuery{CreatedGTE: at(5)}, named("rpm-open", "rpm-edge", "wp-open", "expired", "payment")},
		{"created_lt", ListQuery{CreatedLT: at(2)}, named("rpm-late", "wp-late")},
		{"created range", ListQuery{CreatedGTE: at(1), CreatedLT: at(4)}, named("wp-late", "processing", "succeeded")},
		{"receiver", ListQuery{ReceiverAddress: "0x00000000000000000000000000000000000000AA"}, named("wp-open")},
		{"receiver lowercase", ListQuery{ReceiverAddress: "0x00000000000000000000000000000000000000bb"}, named("wp-late")},
		{"receiver of another merchant", ListQuery{ReceiverAddress: "0x00000000000000000000000000000000000000cc"}, nil},
		{"receiver base58", ListQuery{ReceiverAddress: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"}, nil},
		{"deposit tx", ListQuery{DepositTxHash: "0x" + strings.Repeat("AB", 32)}, named("wp-open")},
		{"deposit tx of another merchant", ListQuery{DepositTxHash: "0x" + strings.Repeat("cd", 32)}, nil},
		{"externalId", ListQuery{ExternalID: "ext-1"}, named("payment")},
		{"externalId unknown", ListQuery{ExternalID: "ext-2"}, nil},
		{"metadata", ListQuery{Metadata: map[string]string{"orderId": "123"}}, named("rpm-late", "processing", "payment")},
		{"metadata two pairs", ListQuery{Metadata: map[string]string{"orderId": "123", "plan": "pro"}}, named("rpm-late")},
		{"metadata value differs", ListQuery{Metadata: map[string]string{"plan": "free"}}, nil},
		{"payments", ListQuery{Payments: true}, named("payment")},
		{"payments and metadata", ListQuery{Payments: true, Metadata: map[string]string{"orderId": "123"}}, named("payment")},
		{"filters combine", ListQuery{Metadata: map[string]string{"plan": "pro"}, Statuses: []session.Status{session.Succeeded}}, named("succeeded")},
	} {
		if got := list(f.st, tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// Status: with no chain indexed and with one whose reconciler has not
	// reached the deadline of wp-late (which then stays waiting_payment),
	// every status set matches exactly what StatusAt says.
	setStatus := func(name string, st session.Status) {
		if _, err := f.st.pool.Exec(f.ctx, `UPDATE sessions SET status = $1 WHERE id = $2`, string(st), ids[name]); err != nil {
			t.Fatal(err)
		}
	}
	setStatus("wp-open", session.WaitingPayment)
	setStatus("wp-late", session.WaitingPayment)
	if _, err := f.st.pool.Exec(f.ctx, `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time, final_number, final_block_time)
		VALUES (8453, 10, '0x0a', $1, 7, $1)`, at(30)); err != nil {
		t.Fatal(err)
	}
	all := []session.Status{session.RequiresPaymentMethod, session.WaitingPayment, session.Processing, session.Succeeded, session.Bounced, session.Expired}
	for _, st := range []*Store{New(f.st.pool), New(f.st.pool).ExpectChains(8453)} {
		reads := map[string]session.Status{}
		for _, id := range ids {
			ss, err := st.GetSession(f.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if ss.MerchantID == a {
				reads[id] = ss.StatusAt(now)
			}
		}
		if reads[ids["rpm-late"]] != session.Expired || reads[ids["rpm-edge"]] != session.Expired || reads[ids["rpm-open"]] != session.RequiresPaymentMethod {
			t.Fatalf("fixture: rpm-late, rpm-edge, rpm-open read %v", reads)
		}
		sets := [][]session.Status{}
		for _, s1 := range all {
			sets = append(sets, []session.Status{s1})
			for _, s2 := range all {
				if s2 > s1 {
					sets = append(sets, []session.Status{s1, s2})
				}
			}
		}
		sets = append(sets, all)
		for _, set := range sets {
			var want []string
			for id, s := range reads {
				if slices.Contains(set, s) {
					want = append(want, id)
				}
			}
			slices.Sort(want)
			if got := list(st, ListQuery{Statuses: set}); !slices.Equal(got, want) {
				t.Errorf("chains %v, status %v: got %v, want %v (reads %v)", st.chains, set, got, want, reads)
			}
		}
	}
	// The fixture covers both readings of wp-late.
	ss, _ := New(f.st.pool).ExpectChains(8453).GetSession(f.ctx, ids["wp-late"])
	if ss.StatusAt(now) != session.WaitingPayment {
		t.Errorf("fixture: wp-late with an indexed chain behind its deadline reads %s", ss.StatusAt(now))
	}
}

// Sessions inserted while a client pages through (at random creation
// times: before, inside and after the pages already read) make no session
// that existed when paging began appear twice or not at all.
func TestListSessionsConcurrentInserts(t *testing.T) {
	f := newListFixture(t)
	a := f.merchant()
	base := time.Unix(1_700_000_000, 0)
	existing := map[string]bool{}
	for i := range 300 {
		id, _ := f.session(a, sessionOpts{created: base.Add(time.Duration(i/3) * time.Second)})
		existing[id] = true
	}
	ctx, cancel := context.WithCancel(f.ctx)
	var wg sync.WaitGroup
	var inserted atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				n := f.n.Add(1)
				created := base.Add(time.Duration(rng.IntN(140)-20) * time.Second)
				ss := &session.Session{
					ID: fmt.Sprintf("%032x", n), MerchantID: a, Status: session.RequiresPaymentMethod,
					Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
						ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC"},
					Display: session.Display{Title: "t", Verb: "Deposit"}, ClientSecret: "s", CreatedAt: created, ExpiresAt: created.Add(time.Hour),
				}
				if err := f.st.CreateSession(ctx, ss, 6); err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				inserted.Add(1)
			}
		}()
	}
	// Wait for the writers to be going before paging starts.
	for inserted.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	seen := map[string]int{}
	q := ListQuery{MerchantID: a}
	for {
		q.Limit = 8
		rows, err := f.st.ListSessions(f.ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, ss := range rows[:min(7, len(rows))] {
			seen[ss.ID]++
		}
		if len(rows) <= 7 {
			break
		}
		q.StartingAfter = rows[6].ID
	}
	cancel()
	wg.Wait()
	if inserted.Load() < 40 {
		t.Logf("only %d sessions inserted while paging", inserted.Load())
	}
	for id := range existing {
		if seen[id] != 1 {
			t.Errorf("session %s seen %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("session %s (inserted while paging) seen %d times", id, n)
		}
	}
	t.Logf("%d existing, %d seen, %d inserted while paging", len(existing), len(seen), inserted.Load())
}
