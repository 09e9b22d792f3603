package reconciler

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/internal/view"
)

// loggedEvent is one outbox row as a test reads it.
type loggedEvent struct {
	typ  string
	seq  int64
	body map[string]any
}

// events returns the subject's events in outbox order, and checks what
// holds for every one: the body repeats the row's id, type and sequence,
// and the sequences are 1, 2, 3, … in that order.
func (h *harness) events(subject string) []loggedEvent {
	h.t.Helper()
	rows, err := h.pg.Query(h.ctx, `SELECT event_id, topic, sequence, payload FROM outbox WHERE subject_id = $1 ORDER BY id`, subject)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []loggedEvent
	for rows.Next() {
		var id string
		var e loggedEvent
		var raw []byte
		if err := rows.Scan(&id, &e.typ, &e.seq, &raw); err != nil {
			h.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &e.body); err != nil {
			h.t.Fatal(err)
		}
		if e.body["id"] != id || e.body["type"] != e.typ || e.body["sequence"] != float64(e.seq) || e.body["isTestEvent"] != false {
			h.t.Errorf("event %s: body %v does not match its row (%s, %d)", id, e.body, e.typ, e.seq)
		}
		if want := int64(len(out) + 1); e.seq != want {
			h.t.Errorf("event %s of %s: sequence %d, want %d", e.typ, subject, e.seq, want)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func eventTypes(evs []loggedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.typ
	}
	return out
}

// asJSON is v as the generic JSON value a receiver decodes.
func asJSON(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantObject checks that an event's object is the session as the API's
// GET renders it now (view.Full is what GET /v1/sessions/{id} calls for
// the API key; api/events_test.go compares against the handler itself).
func (h *harness) wantObject(e loggedEvent, key, id string) {
	h.t.Helper()
	ss, err := h.st.GetSession(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	got := e.body["data"].(map[string]any)[key]
	if want := asJSON(h.t, view.Full(ss, ss.Status)); !reflect.DeepEqual(got, want) {
		h.t.Errorf("%s: data.%s\n%v\nwant the session as GET returns it\n%v", e.typ, key, got, want)
	}
}

// A session's life through the reconciler: one event per change, each
// with the object as it is at that change, sequences 1…n; a replayed step
// writes nothing.
func TestEventsThroughTheLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	if got, want := eventTypes(h.events(id)), []string{store.EventSessionCreated, store.EventSessionWaitingPayment}; !slices.Equal(got, want) {
		t.Fatalf("after create and payment method: %v, want %v", got, want)
	}

	// A token the chain does not list: an exception, and its event.
	const stray = "0x00000000000000000000000000000000000000e1"
	wrong := xfer{token: stray, from: payer, to: rc, amount: big.NewInt(1_500_000), tx: "0x" + strings.Repeat("e", 64), log: 2}
	pay := xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("1", 64)}
	h.block(1, "0xa1", wrong, pay)
	h.step()
	evs := h.events(id)
	// Applied in log order: the payment (log 0), then the stray (log 2).
	if got, want := eventTypes(evs), []string{store.EventSessionCreated, store.EventSessionWaitingPayment, store.EventSessionProcessing, store.EventDepositException}; !slices.Equal(got, want) {
		t.Fatalf("after block 1: %v, want %v", got, want)
	}
	exc := evs[3].body["data"].(map[string]any)["object"].(map[string]any)
	var entryID int64
	if err := h.pg.QueryRow(h.ctx, `SELECT id FROM ledger_entries WHERE session_id = $1 AND kind = 'exception'`, id).Scan(&entryID); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"id": fmt.Sprintf("exc_%d", entryID), "reason": ReasonWrongToken, "status": "open", "sessionId": id, "paymentId": nil,
		"chainId": "31337", "tokenAddress": view.AddressOut(true, stray), "amountRaw": "1500000", "txHash": wrong.tx, "logIndex": float64(2),
		"blockNumber": "1", "from": view.AddressOut(true, payer), "to": view.AddressOut(true, rc), "resolution": nil,
	} {
		if exc[k] != want {
			t.Errorf("deposit.exception object %s = %v, want %v", k, exc[k], want)
		}
	}
	// Each transfer is applied in a transaction of its own, and each event
	// shows the session as that transaction left it.
	h.wantObject(evs[2], "object", id)
	h.wantObject(evs[3], "session", id)
	src := evs[2].body["data"].(map[string]any)["object"].(map[string]any)["paymentMethod"].(map[string]any)["source"]
	if src == nil {
		t.Error("session.processing carries no paymentMethod.source: it was rendered before the source was set")
	}

	// Final, decided, paid out and seen on chain: succeeded, with the
	// delivery in the object.
	h.block(2, "0xa2")
	h.block(3, "0xa3")
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	payoutTx := "0x" + strings.Repeat("d", 64)
	if _, err := h.pg.Exec(h.ctx, `UPDATE payouts SET status = 'sent', tx_hash = $2, from_address = $3 WHERE session_id = $1`, id, payoutTx, treasury); err != nil {
		t.Fatal(err)
	}
	h.block(4, "0xa4", xfer{token: usdc, from: treasury, to: merchantDst, amount: units(10, 6), tx: payoutTx})
	h.block(5, "0xa5")
	h.block(6, "0xa6")
	h.step()
	if got := h.status(id); got != session.Succeeded {
		t.Fatalf("status %s, want succeeded (payouts %v)", got, h.payouts(id))
	}
	evs = h.events(id)
	if got := eventTypes(evs); len(got) != 5 || got[4] != store.EventSessionSucceeded {
		t.Fatalf("events %v, want session.succeeded fifth", got)
	}
	h.wantObject(evs[4], "object", id)
	if d := evs[4].body["data"].(map[string]any)["object"].(map[string]any)["destination"].(map[string]any)["delivery"]; d == nil {
		t.Error("session.succeeded carries no destination.delivery: it was rendered before the delivery was recorded")
	}

	// Replays write nothing.
	h.step()
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.events(id)); n != 5 {
		t.Errorf("%d events after replayed steps, want 5", n)
	}
}

// A credited deposit a reorg removes: the session goes back to waiting
// (session.waiting_payment) and deposit.reorged reports the removed
// transfer, both showing the session as the reorg left it. A removed
// exception is no deposit.reorged.
func TestEventsOfAReorg(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	pay := xfer{token: usdc, from: payer, to: rc, amount: units(10, 6), tx: "0x" + strings.Repeat("1", 64)}
	wrong := xfer{token: "0x00000000000000000000000000000000000000e1", from: payer, to: rc, amount: big.NewInt(1), tx: "0x" + strings.Repeat("2", 64)}
	h.block(1, "0xa1", pay, wrong)
	h.step()
	h.orphan(1, "0xa1", pay, wrong)
	h.block(1, "0xb1")
	h.step()
	if got := h.status(id); got != session.WaitingPayment {
		t.Fatalf("after the reorg: %s, want waiting_payment", got)
	}
	evs := h.events(id)
	want := []string{store.EventSessionCreated, store.EventSessionWaitingPayment, store.EventSessionProcessing, store.EventDepositException,
		store.EventSessionWaitingPayment, store.EventDepositReorged}
	if got := eventTypes(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	h.wantObject(evs[4], "object", id)
	h.wantObject(evs[5], "session", id)
	obj := evs[5].body["data"].(map[string]any)["object"].(map[string]any)
	if obj["reason"] != "reorg" || obj["txHash"] != pay.tx || obj["amountRaw"] != "10000000" || obj["amountUnits"] != "10" {
		t.Errorf("deposit.reorged object %v, want the removed 10 USDC deposit with reason reorg", obj)
	}
	if pm := evs[5].body["data"].(map[string]any)["session"].(map[string]any)["paymentMethod"].(map[string]any); pm["source"] != nil {
		t.Errorf("deposit.reorged's session still has the removed source %v", pm["source"])
	}
}

// Concurrent changes of one session draw gapless sequences in commit
// order: 20 transfers applied at once, each an exception recorded under
// the session's lock.
func TestEventSequenceUnderConcurrentChanges(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, rc := h.session(sessionOpts{amount: units(10, 6)})
	var recv Receiver
	if err := h.pg.QueryRow(h.ctx, `SELECT id, session_id FROM receivers WHERE address = $1`, rc).Scan(&recv.ID, &recv.SessionID); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &Transfer{ChainID: testChainID, BlockNumber: 1, BlockHash: "0xa1", BlockTime: h.blockTime(1), TxHash: fmt.Sprintf("0x%064x", i+1),
				Token: "0x00000000000000000000000000000000000000e1", From: payer, To: rc, Amount: big.NewInt(int64(i + 1))}
			errs <- h.r.ApplyDeposit(h.ctx, h.c, tr, recv)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	evs := h.events(id) // checks 1…n+2 in outbox (insert, so lock) order
	if len(evs) != n+2 {
		t.Fatalf("%d events, want %d", len(evs), n+2)
	}
	var seq int64
	if err := h.pg.QueryRow(h.ctx, `SELECT event_seq FROM sessions WHERE id = $1`, id).Scan(&seq); err != nil || seq != n+2 {
		t.Errorf("sessions.event_seq = %d, %v; want %d", seq, err, n+2)
	}
}
