package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/internal/view"
)

type eventsFixture struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	pg  *pgxpool.Pool
	now time.Time
	n   atomic.Int64
}

func newEventsFixture(t *testing.T) *eventsFixture {
	pg := dbtest.Migrated(t).PG
	return &eventsFixture{t: t, ctx: context.Background(), st: store.New(pg), pg: pg, now: time.Unix(1_700_000_000, 0)}
}

func (f *eventsFixture) merchant() string {
	f.t.Helper()
	m, err := f.st.CreateMerchant(f.ctx, "m")
	if err != nil {
		f.t.Fatal(err)
	}
	return m.ID
}

// session creates a Sessions API session, or a payment's with paymentID.
func (f *eventsFixture) session(merchantID, paymentID string) *session.Session {
	f.t.Helper()
	n := f.n.Add(1)
	ss := &session.Session{
		ID: fmt.Sprintf("%032x", n), MerchantID: merchantID, Status: session.RequiresPaymentMethod,
		Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
			ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC", AmountUnits: "1"},
		Display: session.Display{Title: "t", Verb: "Deposit"}, Metadata: map[string]string{"k": "v"}, ClientSecret: "s",
		CreatedAt: f.now, ExpiresAt: f.now.Add(time.Hour),
	}
	if paymentID != "" {
		ss.Payment = &session.Payment{ID: paymentID, Checkout: session.Checkout{Intent: "Pay"}}
		if _, _, err := f.st.CreatePayment(f.ctx, ss, 6); err != nil {
			f.t.Fatal(err)
		}
		return ss
	}
	if err := f.st.CreateSession(f.ctx, ss, 6); err != nil {
		f.t.Fatal(err)
	}
	return ss
}

func derive(i uint32) (string, error) { return fmt.Sprintf("0x%040x", 0xbeef00+i), nil }

func (f *eventsFixture) events(merchantID, subject string) []store.Event {
	f.t.Helper()
	evs, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: merchantID, Subject: subject, Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	slices.Reverse(evs) // oldest first
	return evs
}

func eventTypes(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// object is an event's data.object as a receiver decodes it.
func object(t *testing.T, e store.Event) any {
	t.Helper()
	var body struct {
		Data struct{ Object any } `json:"data"`
	}
	if err := json.Unmarshal(e.Payload, &body); err != nil {
		t.Fatal(err)
	}
	return body.Data.Object
}

func generic(t *testing.T, v any) any {
	t.Helper()
	b, _ := json.Marshal(v)
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The store's writers: each change is exactly one event of the right
// type, rendered as the API renders the session at that moment; a
// payment's create, payment method and expiry have no event.
func TestStoreEventWriters(t *testing.T) {
	f := newEventsFixture(t)
	m := f.merchant()
	ss := f.session(m, "")
	pay := f.session(m, strings.Repeat("P", 40))

	evs := f.events(m, ss.ID)
	if got := eventTypes(evs); !slices.Equal(got, []string{store.EventSessionCreated}) {
		t.Fatalf("after create: %v, want [session.created]", got)
	}
	got, _ := f.st.GetSession(f.ctx, ss.ID)
	if want := generic(t, view.Full(got, got.Status)); !reflect.DeepEqual(object(t, evs[0]), want) {
		t.Errorf("session.created object\n%v\nwant\n%v", object(t, evs[0]), want)
	}
	if evs[0].Sequence != 1 || evs[0].SubjectID != ss.ID || !strings.HasPrefix(evs[0].ID, store.EventIDPrefix) || evs[0].DeliveredAt != nil {
		t.Errorf("session.created row %+v", evs[0])
	}

	// The same type again is no change; another type is.
	for _, typ := range []string{"evm", "evm", "tron"} {
		if _, _, err := f.st.SetReceiverPaymentMethod(f.ctx, ss.ID, typ, typ, derive, f.now); err != nil {
			t.Fatal(err)
		}
	}
	evs = f.events(m, ss.ID)
	if got := eventTypes(evs); !slices.Equal(got, []string{store.EventSessionCreated, store.EventSessionWaitingPayment, store.EventSessionWaitingPayment}) {
		t.Fatalf("after evm, evm, tron: %v", got)
	}
	got, _ = f.st.GetSession(f.ctx, ss.ID)
	if want := generic(t, view.Full(got, got.Status)); !reflect.DeepEqual(object(t, evs[2]), want) {
		t.Errorf("session.waiting_payment object\n%v\nwant\n%v", object(t, evs[2]), want)
	}
	if pm := object(t, evs[2]).(map[string]any)["paymentMethod"].(map[string]any); pm["type"] != "tron" {
		t.Errorf("second waiting_payment shows payment method %v, want tron", pm["type"])
	}

	if _, _, err := f.st.SetReceiverPaymentMethod(f.ctx, pay.ID, "evm", "evm", derive, f.now); err != nil {
		t.Fatal(err)
	}
	if n, err := f.st.ExpireDue(f.ctx, f.now.Add(2*time.Hour), 10); err != nil || n != 2 {
		t.Fatalf("ExpireDue = %d, %v; want 2", n, err)
	}
	evs = f.events(m, ss.ID)
	if len(evs) != 4 || evs[3].Type != store.EventSessionExpired || evs[3].Sequence != 4 {
		t.Fatalf("after expiry: %v", eventTypes(evs))
	}
	if st := object(t, evs[3]).(map[string]any)["status"]; st != "expired" {
		t.Errorf("session.expired object status %v", st)
	}
	if evs := f.events(m, pay.Payment.ID); len(evs) != 0 {
		t.Errorf("a payment's create, payment method and expiry wrote %v, want nothing", eventTypes(evs))
	}
	if evs := f.events(m, pay.ID); len(evs) != 0 {
		t.Errorf("events under a payment's session id: %v; its subject is the payment id", eventTypes(evs))
	}
}

// Concurrent changes of one session draw 1, 2, 3, … without gaps or
// repeats, in commit order: 20 goroutines switching the payment method
// between two types, each switch an event.
func TestEventSequenceRace(t *testing.T) {
	f := newEventsFixture(t)
	m := f.merchant()
	ss := f.session(m, "")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ := []string{"evm", "tron"}[i%2]
			_, _, err := f.st.SetReceiverPaymentMethod(f.ctx, ss.ID, typ, typ, derive, f.now)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	evs := f.events(m, ss.ID)
	var pms int
	if err := f.pg.QueryRow(f.ctx, `SELECT count(*) FROM payment_methods WHERE session_id = $1`, ss.ID).Scan(&pms); err != nil {
		t.Fatal(err)
	}
	if len(evs) != pms+1 || pms < 2 {
		t.Fatalf("%d events for %d payment methods, want one each plus session.created (and the race to switch at least once)", len(evs), pms)
	}
	for i, e := range evs {
		if e.Sequence != int64(i+1) {
			t.Fatalf("sequences %v, want 1…%d in order", sequences(evs), len(evs))
		}
	}
	if evs[len(evs)-1].Row < evs[0].Row {
		t.Error("outbox ids out of sequence order")
	}
}

func sequences(evs []store.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Sequence
	}
	return out
}

// ListEvents pages newest first without skips or repeats, filters by
// type and subject, and never shows or accepts another merchant's event.
func TestListEvents(t *testing.T) {
	f := newEventsFixture(t)
	m, other := f.merchant(), f.merchant()
	var all []string
	for range 7 {
		ss := f.session(m, "")
		if _, _, err := f.st.SetReceiverPaymentMethod(f.ctx, ss.ID, "evm", "evm", derive, f.now.Add(time.Duration(f.n.Load())*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	theirs := f.session(other, "")
	for _, e := range f.events(m, "") {
		all = append(all, e.ID)
	}
	slices.Reverse(all) // newest first
	if len(all) != 14 {
		t.Fatalf("%d events, want 14", len(all))
	}
	var paged []string
	after := ""
	for range 10 {
		page, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: m, StartingAfter: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			paged = append(paged, e.ID)
		}
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(paged, all) {
		t.Errorf("pages\n%v\nwant\n%v", paged, all)
	}
	created, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: m, Type: store.EventSessionCreated, Limit: 100})
	if err != nil || len(created) != 7 {
		t.Errorf("type filter: %d, %v; want 7", len(created), err)
	}
	for _, e := range created {
		if e.Type != store.EventSessionCreated || e.MerchantID != m {
			t.Errorf("type filter returned %+v", e)
		}
	}
	if evs, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: m, Subject: theirs.ID, Limit: 100}); err != nil || len(evs) != 0 {
		t.Errorf("another merchant's subject: %d events, %v; want none", len(evs), err)
	}
	theirEvents := f.events(other, "")
	if len(theirEvents) != 1 {
		t.Fatalf("other merchant has %d events, want 1", len(theirEvents))
	}
	if _, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: m, StartingAfter: theirEvents[0].ID, Limit: 3}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another merchant's event as cursor: %v, want ErrNotFound", err)
	}
	if _, err := f.st.GetEvent(f.ctx, m, theirEvents[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetEvent of another merchant's event: %v, want ErrNotFound", err)
	}
	if e, err := f.st.GetEvent(f.ctx, other, theirEvents[0].ID); err != nil || e.SubjectID != theirs.ID {
		t.Errorf("GetEvent: %+v, %v", e, err)
	}
}

// Paging while events are written neither skips nor repeats an event that
// existed when paging began: the key (created_at, id) never changes. New
// events land before the first page, or, written with a clock behind the
// others, further down, where a later page picks them up exactly once.
// The writes are interleaved with the pages deterministically.
func TestListEventsUnderConcurrentInserts(t *testing.T) {
	f := newEventsFixture(t)
	m := f.merchant()
	for range 30 {
		f.session(m, "")
	}
	before := map[string]bool{}
	for _, e := range f.events(m, "") {
		before[e.ID] = true
	}
	var behind []string // events written with an old clock while paging
	seen := map[string]int{}
	after := ""
	for pages := 0; ; pages++ {
		page, err := f.st.ListEvents(f.ctx, store.EventQuery{MerchantID: m, StartingAfter: after, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			seen[e.ID]++
		}
		if len(page) < 4 {
			break
		}
		after = page[len(page)-1].ID
		// Between pages: a session created now (newer than every page)
		// and a payment method set with a clock behind every event so far.
		ss := f.session(m, "")
		at := f.now.Add(-30*time.Minute - time.Duration(pages)*time.Second)
		if _, _, err := f.st.SetReceiverPaymentMethod(f.ctx, ss.ID, "evm", "evm", derive, at); err != nil {
			t.Fatal(err)
		}
		for _, e := range f.events(m, ss.ID) {
			if e.Type == store.EventSessionWaitingPayment {
				behind = append(behind, e.ID)
			}
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("event %s on %d pages", id, n)
		}
	}
	for id := range before {
		if seen[id] != 1 {
			t.Errorf("event %s, there before paging began, was skipped", id)
		}
	}
	for _, id := range behind {
		if seen[id] != 1 {
			t.Errorf("event %s (%d of %d), written behind the cursor while paging, seen %d times, want once", id, slices.Index(behind, id), len(behind), seen[id])
		}
	}
	if len(behind) < 5 {
		t.Fatalf("only %d writes interleaved", len(behind))
	}
}
