package reconciler

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// lateTopUp makes a session of 10 USDC with 4 USDC paid in time and a
// 6 USDC top-up mined after the deadline (a late exception), all final.
// It returns the session, the exception's inbox id and the top-up's tx.
func (h *harness) lateTopUp() (id, exc, tx string) {
	h.t.Helper()
	id, rc := h.session(sessionOpts{amount: units(10, 6), expires: h.blockTime(5)})
	h.block(1, "0xa1", xfer{token: usdc, from: payer, to: rc, amount: units(4, 6), tx: "0x" + strings.Repeat("b", 64)})
	tx = "0x" + strings.Repeat("c", 64)
	h.block(6, "0xa6", xfer{token: usdc, from: payer, to: rc, amount: units(6, 6), tx: tx})
	for n := uint64(7); n <= 9; n++ {
		h.block(n, fmt.Sprintf("0xa%d", n))
	}
	h.step()
	if credited, reason := h.classified(tx); credited || reason != ReasonLate {
		h.t.Fatalf("top-up: credited=%v reason=%q, want late", credited, reason)
	}
	var entry int64
	if err := h.pg.QueryRow(h.ctx, `SELECT id FROM ledger_entries WHERE kind = 'exception' AND tx_hash = $1`, tx).Scan(&entry); err != nil {
		h.t.Fatal(err)
	}
	return id, fmt.Sprintf("exc_%d", entry), tx
}

func (h *harness) action(exc string) store.ExceptionAction {
	h.t.Helper()
	_, keyID, err := h.st.CreateAPIKey(h.ctx, h.merchant)
	if err != nil {
		h.t.Fatal(err)
	}
	return store.ExceptionAction{MerchantID: h.merchant, APIKeyID: keyID, ID: exc}
}

// A credited late top-up goes the normal way: Settle sees 10 USDC of
// final credited deposits and delivers, before the bounce it would
// otherwise have decided.
func TestCreditedExceptionIsDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, exc, tx := h.lateTopUp()
	if err := h.attributePast(h.blockTime(9)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.CreditException(h.ctx, h.action(exc)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["delivery"] != units(10, 6).String() || len(got) != 1 {
		t.Fatalf("payouts %v, want one delivery of 10 USDC", got)
	}
	if credited, _ := h.classified(tx); !credited {
		t.Error("the credited top-up is not credited")
	}
	if l := h.ledger(id); !slices.Contains(l, "deposit:"+fmt.Sprint(testChainID)+":0xa6:"+tx+":0") {
		t.Errorf("ledger %v has no deposit line for the credit", l)
	}
}

// A refunded exception's payout, once the indexer sees it final, is a
// refund line on the ledger (reason exception_refund) and leaves the
// session alone: it still bounces what it holds at its deadline.
func TestExceptionRefundConfirmed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, exc, _ := h.lateTopUp()
	const dest = "0x00000000000000000000000000000000000000dd"
	if _, err := h.st.RefundException(h.ctx, h.action(exc), dest); err != nil {
		t.Fatal(err)
	}
	// The executor signed and sent it; the chain shows the transfer.
	sent := "0x" + strings.Repeat("e", 64)
	if _, err := h.pg.Exec(h.ctx, `UPDATE payouts SET status = 'sent', tx_hash = $1, from_address = $2 WHERE kind = 'exception_refund'`, sent, treasury); err != nil {
		t.Fatal(err)
	}
	h.block(10, "0xb10", xfer{token: usdc, from: treasury, to: dest, amount: units(6, 6), tx: sent})
	for n := uint64(11); n <= 12; n++ {
		h.block(n, fmt.Sprintf("0xb%d", n))
	}
	h.step()
	var status string
	if err := h.pg.QueryRow(h.ctx, `SELECT status FROM payouts WHERE kind = 'exception_refund'`).Scan(&status); err != nil || status != "confirmed" {
		t.Fatalf("exception refund %q (%v), want confirmed", status, err)
	}
	var kind, reason, amount string
	if err := h.pg.QueryRow(h.ctx, `SELECT kind, reason, amount::text FROM ledger_entries
		WHERE entry_id = 'exception_refund:' || (SELECT entry_id FROM ledger_entries WHERE id = $1)`,
		strings.TrimPrefix(exc, "exc_")).Scan(&kind, &reason, &amount); err != nil {
		t.Fatalf("refund line: %v (ledger %v)", err, h.ledger(id))
	}
	if kind != "refund" || reason != "exception_refund" || amount != units(6, 6).String() {
		t.Errorf("refund line %s %s %s", kind, reason, amount)
	}
	if s := h.status(id); s != session.Processing {
		t.Fatalf("session %s after the exception's refund, want still processing", s)
	}
	if err := h.attributePast(h.blockTime(12)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.r.Settle(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.payouts(id); got["refund"] != units(4, 6).String() {
		t.Fatalf("payouts %v, want the bounce of the 4 USDC credited", got)
	}
}

// An exception a reorg removed is not money settle holds: it leaves the
// inbox, and no action reaches it; when its block comes back, the
// deposit is a new item (a new application, a new entry) that can be
// acted on once final.
func TestReorgedExceptionLeavesTheInbox(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, rc := h.session(sessionOpts{amount: units(10, 6), expires: h.blockTime(5)})
	late := xfer{token: usdc, from: payer, to: rc, amount: units(3, 6), tx: "0x" + strings.Repeat("d", 64)}
	h.block(6, "0xa6", late)
	h.step()
	list := func() []string {
		t.Helper()
		rows, err := h.st.ListExceptions(h.ctx, h.merchant, store.ExceptionFilter{}, store.ExceptionCursor{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range rows {
			ids = append(ids, e.ID)
		}
		return ids
	}
	first := list()
	if len(first) != 1 {
		t.Fatalf("inbox %v, want the late deposit", first)
	}
	// Not final yet: it cannot be refunded.
	var c *store.ExceptionConflict
	if _, err := h.st.RefundException(h.ctx, h.action(first[0]), "0x00000000000000000000000000000000000000dd"); !errors.As(err, &c) || c.Code != "deposit_not_final" {
		t.Fatalf("refund of an unfinal deposit: %v, want deposit_not_final", err)
	}
	h.orphan(6, "0xa6", late)
	h.block(6, "0xb6")
	h.step()
	if got := list(); len(got) != 0 {
		t.Fatalf("inbox after the reorg %v, want empty", got)
	}
	if _, err := h.st.RefundException(h.ctx, h.action(first[0]), "0x00000000000000000000000000000000000000dd"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refund of a reorged exception: %v, want not found", err)
	}
	// A comes back and is final: a new item, refundable.
	h.orphan(6, "0xb6")
	h.block(6, "0xa6", late)
	h.block(7, "0xa7")
	h.block(8, "0xa8")
	h.step()
	again := list()
	if len(again) != 1 || again[0] == first[0] {
		t.Fatalf("inbox after the block came back %v, want one new item (not %s)", again, first[0])
	}
	if _, err := h.st.RefundException(h.ctx, h.action(again[0]), "0x00000000000000000000000000000000000000dd"); err != nil {
		t.Fatalf("refund of the revived deposit: %v", err)
	}
}
