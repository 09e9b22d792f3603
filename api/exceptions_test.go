package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/reconciler"
)

// inbox is an API with the exceptions inbox on, and a reconciler on the
// same databases that records deposits the way production does
// (ApplyDeposit classifies them; exceptions are its ledger entries).
type inbox struct {
	*bundle
	chains *chain.Registry
	rec    *reconciler.Reconciler
	base   *chain.Chain
}

func setupInbox(t *testing.T) *inbox {
	t.Helper()
	in := &inbox{}
	in.bundle = setup(t, func(c *api.Config) {
		c.Exceptions = c.Store.(*store.Store)
		in.chains = c.Chains
	})
	var err error
	in.rec, err = reconciler.New(reconciler.Config{Chains: in.chains, Postgres: in.db.PG, ClickHouse: in.db.CH, Treasury: treasury,
		Now: func() time.Time { return time.Unix(0, in.now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	in.base, _ = in.chains.Chain(8453)
	return in
}

// session creates a session of merchant key (10 USDC on Base) with an EVM
// receiver, and returns its id and receiver.
func (in *inbox) session(key string) (string, reconciler.Receiver) {
	in.t.Helper()
	id, secret := in.create(key)
	r := in.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	if r.Status != 200 {
		in.t.Fatalf("payment method: %d %s", r.Status, r.Raw)
	}
	rc := reconciler.Receiver{SessionID: id}
	if err := in.db.PG.QueryRow(context.Background(), `SELECT id FROM receivers WHERE session_id = $1`, id).Scan(&rc.ID); err != nil {
		in.t.Fatal(err)
	}
	return id, rc
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "0x" + hex.EncodeToString(b)
}

// deposit applies a transfer of amount token units into rc's receiver,
// mined at `at`, through the reconciler; final marks it final (as the
// reconciler does once its block is deep enough). It returns the tx hash.
func (in *inbox) deposit(rc reconciler.Receiver, token string, amount int64, at time.Time, final bool) string {
	in.t.Helper()
	ctx := context.Background()
	var to string
	if err := in.db.PG.QueryRow(ctx, `SELECT address FROM receivers WHERE id = $1`, rc.ID).Scan(&to); err != nil {
		in.t.Fatal(err)
	}
	tx := randHex(in.t, 32)
	tr := &reconciler.Transfer{ChainID: 8453, BlockNumber: 100, BlockHash: randHex(in.t, 32), BlockTime: at, TxHash: tx,
		Token: strings.ToLower(token), From: strings.ToLower(payee), To: to, Amount: big.NewInt(amount)}
	if err := in.rec.ApplyDeposit(ctx, in.base, tr, rc); err != nil {
		in.t.Fatal(err)
	}
	if final {
		if _, err := in.db.PG.Exec(ctx, `UPDATE deposits SET status = 'final', final_at = now() WHERE tx_hash = $1`, tx); err != nil {
			in.t.Fatal(err)
		}
	}
	return tx
}

// exceptionOf returns the id of the exception entry of transfer tx.
func (in *inbox) exceptionOf(tx string) string {
	in.t.Helper()
	var id int64
	if err := in.db.PG.QueryRow(context.Background(), `SELECT id FROM ledger_entries WHERE kind = 'exception' AND tx_hash = $1`, tx).Scan(&id); err != nil {
		in.t.Fatalf("exception of %s: %v", tx, err)
	}
	return fmt.Sprintf("exc_%d", id)
}

func (in *inbox) count(q string, args ...any) int {
	in.t.Helper()
	var n int
	if err := in.db.PG.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		in.t.Fatal(err)
	}
	return n
}

func (in *inbox) expiresAt(sessionID string) time.Time {
	in.t.Helper()
	var at time.Time
	if err := in.db.PG.QueryRow(context.Background(), `SELECT expires_at FROM sessions WHERE id = $1`, sessionID).Scan(&at); err != nil {
		in.t.Fatal(err)
	}
	return at
}

func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.Status, status, code, r.Raw)
	}
	if _, got, _ := errorOf(t, r); got != code {
		t.Fatalf("code %s, want %s: %s", got, code, r.Raw)
	}
}

func ids(r response) []string {
	var out []string
	for _, o := range r.Body["data"].([]any) {
		out = append(out, o.(map[string]any)["id"].(string))
	}
	return out
}

// The inbox lists only the merchant's own exceptions, newest first, with
// the transfer and session; filters and pages agree with the full list,
// pages neither skip nor repeat while new exceptions arrive, and ids of
// another merchant are answered like unknown ones.
func TestExceptionsListFilterPaginationIsolation(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	now := time.Unix(0, in.now.Load())
	sa, rca := in.session(in.key)
	sb, rcb := in.session(in.keyB)
	late := in.expiresAt(sa).Add(time.Minute)
	var want []string // newest first
	add := func(id string) { want = append([]string{id}, want...) }
	wrongTx := in.deposit(rca, "0x"+strings.Repeat("ab", 20), 7, now, true)
	add(in.exceptionOf(wrongTx))
	for range 4 {
		in.advance(time.Second) // recorded_at is the database clock; the order key is (recorded_at, id) either way
		add(in.exceptionOf(in.deposit(rca, baseUSDC, 3_000_000, late, true)))
	}
	otherTx := in.deposit(rcb, baseUSDC, 5, in.expiresAt(sb).Add(time.Minute), true)
	other := in.exceptionOf(otherTx)
	// A payout of merchant A's that needs attention is in the inbox too.
	var payoutID int64
	if err := in.db.PG.QueryRow(ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status, error)
		VALUES ($1, 'delivery', 8453, $2, $3, 10000000, 'needs_attention', 'gas estimate keeps failing') RETURNING id`,
		sa, strings.ToLower(baseUSDC), strings.ToLower(payee)).Scan(&payoutID); err != nil {
		t.Fatal(err)
	}
	add(fmt.Sprintf("exc_payout_%d", payoutID))

	all := in.do("GET", "/v1/exceptions?limit=100", nil, in.bearer(in.key)...)
	if all.Status != 200 || all.Body["hasMore"] != false || all.Body["nextCursor"] != nil {
		t.Fatalf("list: %d %s", all.Status, all.Raw)
	}
	if got := ids(all); !slices.Equal(got, want) {
		t.Fatalf("list %v, want %v", got, want)
	}
	// One object in full: the wrong-token transfer as the ledger has it.
	var wrong map[string]any
	for _, o := range all.Body["data"].([]any) {
		if m := o.(map[string]any); m["reason"] == "wrong_token" {
			wrong = m
		}
	}
	for k, v := range map[string]any{"status": "open", "sessionId": sa, "paymentId": nil, "chainId": "8453", "amountRaw": "7",
		"txHash": wrongTx, "from": payee, "blockNumber": "100", "resolution": nil, "tokenAddress": common.HexToAddress(strings.Repeat("ab", 20)).Hex()} {
		if fmt.Sprint(wrong[k]) != fmt.Sprint(v) {
			t.Errorf("wrong_token exception %s = %v, want %v (%v)", k, wrong[k], v, wrong)
		}
	}
	for _, o := range all.Body["data"].([]any) {
		if m := o.(map[string]any); m["reason"] == "late" && (m["tokenSymbol"] != "USDC" || m["amountUnits"] != "3") {
			t.Errorf("late exception: %v", m)
		}
	}
	// Pages of 2, with two new exceptions arriving between pages: the
	// pages hold exactly the exceptions that existed at the first page.
	var paged []string
	cursor := ""
	for page := 0; ; page++ {
		q := "/v1/exceptions?limit=2"
		if cursor != "" {
			q += "&starting_after=" + cursor
		}
		r := in.do("GET", q, nil, in.bearer(in.key)...)
		if r.Status != 200 {
			t.Fatalf("page %d: %d %s", page, r.Status, r.Raw)
		}
		paged = append(paged, ids(r)...)
		if page < 2 {
			in.advance(time.Second)
			in.deposit(rca, baseUSDC, 1, late, true)
		}
		if r.Body["nextCursor"] == nil {
			break
		}
		cursor = r.Body["nextCursor"].(string)
	}
	if !slices.Equal(paged, want) {
		t.Errorf("paged %v, want %v", paged, want)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"reason=wrong_token", []string{in.exceptionOf(wrongTx)}},
		{"reason=needs_attention", []string{fmt.Sprintf("exc_payout_%d", payoutID)}},
		{"status=resolved", nil},
	} {
		r := in.do("GET", "/v1/exceptions?"+tc.query, nil, in.bearer(in.key)...)
		if r.Status != 200 || !slices.Equal(ids(r), tc.want) {
			t.Errorf("%s: %d %v, want %v", tc.query, r.Status, ids(r), tc.want)
		}
	}
	// The payout makes the session settling: the two deposits that
	// arrived while paging are after_session_finished, not late.
	if r := in.do("GET", "/v1/exceptions?status=open&reason=late", nil, in.bearer(in.key)...); !slices.Equal(ids(r), want[1:5]) {
		t.Errorf("open late: %v, want %v", ids(r), want[1:5])
	}
	if r := in.do("GET", "/v1/exceptions?reason=after_session_finished", nil, in.bearer(in.key)...); len(ids(r)) != 2 {
		t.Errorf("after_session_finished: %v, want the 2 that arrived while paging", ids(r))
	}
	// Merchant B sees only its own.
	if r := in.do("GET", "/v1/exceptions", nil, in.bearer(in.keyB)...); !slices.Equal(ids(r), []string{other}) {
		t.Errorf("merchant B's list %v, want [%s]", ids(r), other)
	}
	missing := in.do("GET", "/v1/exceptions/exc_999999999", nil, in.bearer(in.key)...)
	wantError(t, missing, 404, "exception_not_found")
	foreign := in.do("GET", "/v1/exceptions/"+other, nil, in.bearer(in.key)...)
	wantError(t, foreign, 404, "exception_not_found")
	if foreign.Raw != missing.Raw {
		t.Errorf("another merchant's exception answers %s, a missing one %s", foreign.Raw, missing.Raw)
	}
	if r := in.do("GET", "/v1/exceptions/"+other, nil, in.bearer(in.keyB)...); r.Status != 200 || r.Body["id"] != other || r.Body["sessionId"] != sb {
		t.Errorf("merchant B's own exception: %d %s", r.Status, r.Raw)
	}
	for _, q := range []string{"starting_after=" + other, "starting_after=exc_1x", "limit=0", "limit=101", "status=closed",
		"reason=spam", "status=open&status=resolved", "sort=asc"} {
		if r := in.do("GET", "/v1/exceptions?"+q, nil, in.bearer(in.key)...); r.Status != 400 {
			t.Errorf("%s: %d %s, want 400", q, r.Status, r.Raw)
		}
	}
	wantError(t, in.do("GET", "/v1/exceptions", nil), 401, "missing_api_key")
	wantError(t, in.do("DELETE", "/v1/exceptions/"+other, nil, in.bearer(in.keyB)...), 405, "method_not_allowed")
	for _, id := range []string{"exc_0", "exc_-1", "exc_01", "exc_payout_", "exc_payout_x", "1", strings.Repeat("9", 100)} {
		wantError(t, in.do("GET", "/v1/exceptions/"+id, nil, in.bearer(in.key)...), 404, "exception_not_found")
	}
}

// refund returns POST /v1/exceptions/{id}/refund as key.
func (in *inbox) refund(key, id string, body any) response {
	in.t.Helper()
	return in.do("POST", "/v1/exceptions/"+id+"/refund", body, in.bearer(key)...)
}

// A late deposit that is final is refunded once, for exactly its amount
// in its token on its chain, to the address given: a payout the delivery
// executor picks up, a resolution and an audit entry, in one transaction.
func TestExceptionRefund(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	sid, rc := in.session(in.key)
	tx := in.deposit(rc, baseUSDC, 2_500_000, in.expiresAt(sid).Add(time.Minute), true)
	id := in.exceptionOf(tx)
	dest := "0x" + strings.Repeat("12", 20)

	// The amount is the exception's: a request naming one is refused.
	wantError(t, in.refund(in.key, id, map[string]any{"address": dest, "amount": "999"}), 400, "unknown_field")
	if n := in.count(`SELECT count(*) FROM payouts`); n != 0 {
		t.Fatalf("%d payouts after a refused refund", n)
	}
	r := in.refund(in.key, id, map[string]any{"address": dest, "note": "payer asked"})
	if r.Status != 200 || r.Body["status"] != "refunded" {
		t.Fatalf("refund: %d %s", r.Status, r.Raw)
	}
	res := r.Body["resolution"].(map[string]any)
	if res["action"] != "refund" || res["note"] != "payer asked" || res["txHash"] != nil || res["at"] == "" {
		t.Errorf("resolution %v", res)
	}
	var kind, token, to, amount string
	var chainID, excID int64
	var sessionID string
	if err := in.db.PG.QueryRow(ctx, `SELECT kind, session_id, chain_id, token, to_address, amount::text, exception_id FROM payouts`).
		Scan(&kind, &sessionID, &chainID, &token, &to, &amount, &excID); err != nil {
		t.Fatal(err)
	}
	if kind != "exception_refund" || sessionID != sid || chainID != 8453 || token != strings.ToLower(baseUSDC) || to != dest || amount != "2500000" ||
		fmt.Sprintf("exc_%d", excID) != id {
		t.Errorf("payout %s %s %d %s %s %s %d", kind, sessionID, chainID, token, to, amount, excID)
	}
	keyID, err := in.store.APIKeyID(ctx, in.key)
	if err != nil {
		t.Fatal(err)
	}
	var operator, note, reason string
	if err := in.db.PG.QueryRow(ctx, `SELECT operator, note, reason FROM ledger_entries WHERE kind = 'operator' AND entry_id = $1`,
		"operator:exception_refund:"+id).Scan(&operator, &note, &reason); err != nil {
		t.Fatalf("audit entry: %v", err)
	}
	if operator != "api_key:"+keyID || note != "payer asked" || reason != "exception_refund" {
		t.Errorf("audit entry %q %q %q", operator, note, reason)
	}
	// Once only.
	wantError(t, in.refund(in.key, id, map[string]any{"address": dest}), 409, "exception_not_open")
	wantError(t, in.do("POST", "/v1/exceptions/"+id+"/resolve", map[string]any{"note": "x"}, in.bearer(in.key)...), 409, "exception_not_open")
	if n := in.count(`SELECT count(*) FROM payouts`); n != 1 {
		t.Errorf("%d payouts, want 1", n)
	}
	// With an Idempotency-Key, a retried request replays the first
	// answer and acts once (the action runs inside the key's
	// transaction).
	tx2 := in.deposit(rc, baseUSDC, 700_000, in.expiresAt(sid).Add(2*time.Minute), true)
	id2 := in.exceptionOf(tx2)
	hdr := append(in.bearer(in.key), "Idempotency-Key", "refund-"+id2)
	first := in.do("POST", "/v1/exceptions/"+id2+"/refund", map[string]any{"address": dest}, hdr...)
	again := in.do("POST", "/v1/exceptions/"+id2+"/refund", map[string]any{"address": dest}, hdr...)
	if first.Status != 200 || again.Raw != first.Raw {
		t.Errorf("idempotent refund: %d %s, then %d %s", first.Status, first.Raw, again.Status, again.Raw)
	}
	if n := in.count(`SELECT count(*) FROM payouts WHERE amount = 700000`); n != 1 {
		t.Errorf("%d payouts for the idempotent refund, want 1", n)
	}
	// The audit entry reaches ClickHouse's ledger_operator.
	if _, err := in.rec.CopyLedger(ctx); err != nil {
		t.Fatal(err)
	}
	var chOperator string
	if err := in.db.CH.QueryRow(ctx, `SELECT operator FROM ledger_operator FINAL WHERE entry_id = ?`, "operator:exception_refund:"+id).Scan(&chOperator); err != nil || chOperator != operator {
		t.Errorf("ledger_operator: %q, %v", chOperator, err)
	}
}

// Two (here twenty) refunds of one exception at once make one payout:
// the others are told it is not open any more.
func TestExceptionRefundConcurrent(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	sid, rc := in.session(in.key)
	id := in.exceptionOf(in.deposit(rc, baseUSDC, 1_000_000, in.expiresAt(sid).Add(time.Minute), true))
	const n = 20
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Half refund, a few resolve: whatever wins, exactly one
			// action lands.
			if i%5 == 4 {
				statuses[i] = in.do("POST", "/v1/exceptions/"+id+"/resolve", map[string]any{"note": "race"}, in.bearer(in.key)...).Status
				return
			}
			statuses[i] = in.refund(in.key, id, map[string]any{"address": fmt.Sprintf("0x%040x", i+1)}).Status
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 409:
		default:
			t.Errorf("status %d", s)
		}
	}
	payouts := in.count(`SELECT count(*) FROM payouts WHERE kind = 'exception_refund'`)
	resolutions := in.count(`SELECT count(*) FROM exception_resolutions`)
	audits := in.count(`SELECT count(*) FROM ledger_entries WHERE kind = 'operator'`)
	if ok != 1 || resolutions != 1 || audits != 1 || payouts > 1 {
		t.Errorf("%d succeeded, %d payouts, %d resolutions, %d audit entries; want one action (statuses %v)", ok, payouts, resolutions, audits, statuses)
	}
	var action string
	if err := in.db.PG.QueryRow(context.Background(), `SELECT action FROM exception_resolutions`).Scan(&action); err != nil {
		t.Fatal(err)
	}
	if (action == "refund") != (payouts == 1) {
		t.Errorf("winning action %s with %d payouts", action, payouts)
	}
}

// The refund address is hostile input: never settle's own addresses,
// never one that burns the tokens, always a well-formed EVM address; and
// another merchant's exception is not there at all.
func TestExceptionRefundAttacks(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	sid, rc := in.session(in.key)
	id := in.exceptionOf(in.deposit(rc, baseUSDC, 1_000_000, in.expiresAt(sid).Add(time.Minute), true))
	var receiver string
	if err := in.db.PG.QueryRow(context.Background(), `SELECT address FROM receivers WHERE id = $1`, rc.ID).Scan(&receiver); err != nil {
		t.Fatal(err)
	}
	_, otherRC := in.session(in.keyB)
	var otherReceiver string
	if err := in.db.PG.QueryRow(context.Background(), `SELECT address FROM receivers WHERE id = $1`, otherRC.ID).Scan(&otherReceiver); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		body any
		code string
	}{
		{"treasury", map[string]any{"address": treasury}, "reserved_address"},
		{"treasury lowercase", map[string]any{"address": strings.ToLower(treasury)}, "reserved_address"},
		{"own receiver", map[string]any{"address": receiver}, "reserved_address"},
		{"another session's receiver, uppercase", map[string]any{"address": "0x" + strings.ToUpper(otherReceiver[2:])}, "reserved_address"},
		{"executor contract", map[string]any{"address": baseExecutor}, "reserved_address"},
		{"zero address", map[string]any{"address": zeroAddress}, "invalid_address"},
		{"the token contract", map[string]any{"address": baseUSDC}, "invalid_address"},
		{"short", map[string]any{"address": "0x1234"}, "invalid_address"},
		{"not hex", map[string]any{"address": "0x" + strings.Repeat("zz", 20)}, "invalid_address"},
		{"bad checksum", map[string]any{"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"}, "invalid_checksum"},
		{"missing", map[string]any{}, "missing_field"},
		{"number", map[string]any{"address": 5}, "invalid_type"},
		{"amount", map[string]any{"address": payee, "amount": "1"}, "unknown_field"},
		{"token", map[string]any{"address": payee, "tokenAddress": baseDAI}, "unknown_field"},
		{"chain", map[string]any{"address": payee, "chainId": 10}, "unknown_field"},
		{"long note", map[string]any{"address": payee, "note": strings.Repeat("n", 501)}, "too_long"},
		{"not json", "{", "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := in.refund(in.key, id, tc.body)
			wantError(t, r, 400, tc.code)
		})
	}
	// Another merchant: 404 exactly like a missing exception, for every
	// action, and nothing happens.
	missing := in.refund(in.keyB, "exc_999999999", map[string]any{"address": payee})
	wantError(t, missing, 404, "exception_not_found")
	for path, body := range map[string]map[string]any{
		"/refund":  {"address": payee, "note": "mine now"},
		"/credit":  {"note": "mine now"},
		"/resolve": {"note": "mine now"},
	} {
		r := in.do("POST", "/v1/exceptions/"+id+path, body, in.bearer(in.keyB)...)
		wantError(t, r, 404, "exception_not_found")
		if r.Raw != missing.Raw {
			t.Errorf("%s of another merchant's exception: %s; a missing one: %s", path, r.Raw, missing.Raw)
		}
	}
	wantError(t, in.refund("settle_sk_forged", id, map[string]any{"address": payee}), 401, "invalid_api_key")
	if n := in.count(`SELECT count(*) FROM payouts`) + in.count(`SELECT count(*) FROM exception_resolutions`); n != 0 {
		t.Errorf("attacks left %d payouts and resolutions", n)
	}
	// And the legitimate refund still works afterwards.
	if r := in.refund(in.key, id, map[string]any{"address": payee}); r.Status != 200 {
		t.Errorf("refund: %d %s", r.Status, r.Raw)
	}
}

// What can be refunded: a wrong token never (the treasury does not hold
// it), a deposit only once final, a held amount (overpaid) only once the
// session succeeded (before that a bounce may refund it with the rest).
func TestExceptionRefundRules(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	sid, rc := in.session(in.key)
	now := time.Unix(0, in.now.Load())
	wrong := in.exceptionOf(in.deposit(rc, "0x"+strings.Repeat("ab", 20), 7, now, true))
	wantError(t, in.refund(in.key, wrong, map[string]any{"address": payee}), 409, "exception_not_refundable")
	unfinal := in.exceptionOf(in.deposit(rc, baseUSDC, 1_000_000, in.expiresAt(sid).Add(time.Minute), false))
	wantError(t, in.refund(in.key, unfinal, map[string]any{"address": payee}), 409, "deposit_not_final")

	// 12 USDC for 10: the delivery is scheduled and 2 USDC is held as
	// overpaid.
	s2, rc2 := in.session(in.key)
	in.deposit(rc2, baseUSDC, 12_000_000, now, true)
	if _, err := in.rec.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var overpaid int64
	if err := in.db.PG.QueryRow(ctx, `SELECT id FROM ledger_entries WHERE reason = 'overpaid' AND session_id = $1`, s2).Scan(&overpaid); err != nil {
		t.Fatalf("overpaid entry: %v", err)
	}
	op := fmt.Sprintf("exc_%d", overpaid)
	wantError(t, in.refund(in.key, op, map[string]any{"address": payee}), 409, "session_not_settled")
	// The delivery is confirmed (what confirmPayout does, in short).
	if _, err := in.db.PG.Exec(ctx, `UPDATE sessions SET status = 'succeeded' WHERE id = $1`, s2); err != nil {
		t.Fatal(err)
	}
	r := in.refund(in.key, op, map[string]any{"address": payee})
	if r.Status != 200 || r.Body["amountRaw"] != "2000000" || r.Body["tokenSymbol"] != "USDC" {
		t.Fatalf("refund of overpaid: %d %s", r.Status, r.Raw)
	}
	if n := in.count(`SELECT count(*) FROM payouts WHERE kind = 'exception_refund' AND amount = 2000000 AND session_id = $1`, s2); n != 1 {
		t.Errorf("%d exception refunds of 2 USDC", n)
	}
	// The delivery stays the session's one delivery.
	if n := in.count(`SELECT count(*) FROM payouts WHERE kind = 'delivery' AND session_id = $1`, s2); n != 1 {
		t.Errorf("%d deliveries", n)
	}
}

// A refunded late top-up does not count as the session's payout: an
// underpaid session still bounces its credited deposit at the deadline.
func TestExceptionRefundLeavesSessionToSettle(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	sid, rc := in.session(in.key)
	now := time.Unix(0, in.now.Load())
	expires := in.expiresAt(sid)
	in.deposit(rc, baseUSDC, 4_000_000, now, true)
	late := in.exceptionOf(in.deposit(rc, baseUSDC, 6_000_000, expires.Add(time.Minute), true))
	if r := in.refund(in.key, late, map[string]any{"address": payee}); r.Status != 200 {
		t.Fatalf("refund: %d %s", r.Status, r.Raw)
	}
	in.advance(2 * time.Hour)
	// Every chain's final blocks are attributed past the deadline.
	for _, c := range []int64{8453, 10} {
		if _, err := in.db.PG.Exec(ctx, `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time, final_number, final_block_time)
			VALUES ($1, 1, 'h', $2, 1, $2)`, c, expires.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.rec.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var amount string
	if err := in.db.PG.QueryRow(ctx, `SELECT amount::text FROM payouts WHERE kind = 'refund' AND session_id = $1`, sid).Scan(&amount); err != nil {
		t.Fatalf("bounce refund: %v", err)
	}
	if amount != "4000000" {
		t.Errorf("bounce refunds %s, want the credited 4000000", amount)
	}
}

// A late top-up of an underpaid session that has not bounced yet can be
// credited: the deposit counts, the ledger says so, and the reconciler's
// normal path delivers. A wrong token, an unfinal deposit or an ended
// session cannot be credited.
func TestExceptionCredit(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	sid, rc := in.session(in.key)
	now := time.Unix(0, in.now.Load())
	expires := in.expiresAt(sid)
	in.deposit(rc, baseUSDC, 4_000_000, now, true)
	wrong := in.exceptionOf(in.deposit(rc, "0x"+strings.Repeat("ab", 20), 7, now, true))
	wantError(t, in.do("POST", "/v1/exceptions/"+wrong+"/credit", nil, in.bearer(in.key)...), 409, "exception_not_creditable")
	unfinalTx := in.deposit(rc, baseUSDC, 1, expires.Add(time.Second), false)
	wantError(t, in.do("POST", "/v1/exceptions/"+in.exceptionOf(unfinalTx)+"/credit", nil, in.bearer(in.key)...), 409, "deposit_not_final")
	lateTx := in.deposit(rc, baseUSDC, 6_000_000, expires.Add(time.Minute), true)
	late := in.exceptionOf(lateTx)
	wantError(t, in.do("POST", "/v1/exceptions/"+late+"/credit", map[string]any{"amount": "1"}, in.bearer(in.key)...), 400, "unknown_field")

	r := in.do("POST", "/v1/exceptions/"+late+"/credit", map[string]any{"note": "accepted late"}, in.bearer(in.key)...)
	if r.Status != 200 || r.Body["status"] != "credited" || r.Body["resolution"].(map[string]any)["action"] != "credit" {
		t.Fatalf("credit: %d %s", r.Status, r.Raw)
	}
	if n := in.count(`SELECT count(*) FROM deposits WHERE tx_hash = $1 AND credited AND exception IS NULL`, lateTx); n != 1 {
		t.Error("deposit not credited")
	}
	if n := in.count(`SELECT count(*) FROM ledger_entries WHERE kind = 'deposit' AND reason = 'exception_credit' AND tx_hash = $1 AND amount = 6000000`, lateTx); n != 1 {
		t.Error("no deposit ledger entry for the credit")
	}
	if n := in.count(`SELECT count(*) FROM ledger_entries WHERE kind = 'operator' AND reason = 'exception_credit' AND note = 'accepted late'`); n != 1 {
		t.Error("no audit entry for the credit")
	}
	wantError(t, in.do("POST", "/v1/exceptions/"+late+"/credit", nil, in.bearer(in.key)...), 409, "exception_not_open")
	if _, err := in.rec.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var amount string
	if err := in.db.PG.QueryRow(ctx, `SELECT amount::text FROM payouts WHERE kind = 'delivery' AND session_id = $1`, sid).Scan(&amount); err != nil {
		t.Fatalf("delivery after the credit: %v", err)
	}
	if amount != "10000000" {
		t.Errorf("delivery of %s, want the requested 10000000", amount)
	}
	// The session now has its delivery: another late deposit is too late
	// to credit.
	again := in.exceptionOf(in.deposit(rc, baseUSDC, 5, expires.Add(2*time.Minute), true))
	wantError(t, in.do("POST", "/v1/exceptions/"+again+"/credit", nil, in.bearer(in.key)...), 409, "session_not_creditable")

	// An expired session has ended.
	s2, rc2 := in.session(in.key)
	expired := in.exceptionOf(in.deposit(rc2, baseUSDC, 5, in.expiresAt(s2).Add(time.Minute), true))
	if _, err := in.db.PG.Exec(ctx, `UPDATE sessions SET status = 'expired' WHERE id = $1`, s2); err != nil {
		t.Fatal(err)
	}
	wantError(t, in.do("POST", "/v1/exceptions/"+expired+"/credit", nil, in.bearer(in.key)...), 409, "session_not_creditable")
}

// Resolve needs a note; a resolved exception takes no other action, and
// a payout that needs attention can be resolved (not refunded).
func TestExceptionResolve(t *testing.T) {
	t.Parallel()
	in := setupInbox(t)
	ctx := context.Background()
	sid, rc := in.session(in.key)
	id := in.exceptionOf(in.deposit(rc, "0x"+strings.Repeat("ab", 20), 7, time.Unix(0, in.now.Load()), true))
	resolve := func(id string, body any) response {
		return in.do("POST", "/v1/exceptions/"+id+"/resolve", body, in.bearer(in.key)...)
	}
	wantError(t, resolve(id, map[string]any{}), 400, "missing_field")
	wantError(t, resolve(id, map[string]any{"note": "   "}), 400, "missing_field")
	wantError(t, resolve(id, map[string]any{"note": strings.Repeat("é", 501)}), 400, "too_long")
	wantError(t, resolve(id, map[string]any{"note": "bell\a"}), 400, "invalid_value")
	r := resolve(id, map[string]any{"note": strings.Repeat("é", 500)})
	if r.Status != 200 || r.Body["status"] != "resolved" || r.Body["resolution"].(map[string]any)["note"] != strings.Repeat("é", 500) {
		t.Fatalf("resolve: %d %s", r.Status, r.Raw)
	}
	wantError(t, resolve(id, map[string]any{"note": "again"}), 409, "exception_not_open")
	wantError(t, in.refund(in.key, id, map[string]any{"address": payee}), 409, "exception_not_open")
	wantError(t, in.do("POST", "/v1/exceptions/"+id+"/credit", nil, in.bearer(in.key)...), 409, "exception_not_open")
	if r := in.do("GET", "/v1/exceptions?status=resolved", nil, in.bearer(in.key)...); !slices.Equal(ids(r), []string{id}) {
		t.Errorf("resolved: %v", ids(r))
	}

	var payoutID int64
	if err := in.db.PG.QueryRow(ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status, error)
		VALUES ($1, 'delivery', 8453, $2, $3, 10000000, 'needs_attention', 'stuck') RETURNING id`,
		sid, strings.ToLower(baseUSDC), strings.ToLower(payee)).Scan(&payoutID); err != nil {
		t.Fatal(err)
	}
	pid := fmt.Sprintf("exc_payout_%d", payoutID)
	wantError(t, in.refund(in.key, pid, map[string]any{"address": payee}), 409, "action_not_allowed")
	wantError(t, in.do("POST", "/v1/exceptions/"+pid+"/credit", nil, in.bearer(in.key)...), 409, "action_not_allowed")
	if r := resolve(pid, map[string]any{"note": "support is on it"}); r.Status != 200 || r.Body["status"] != "resolved" || r.Body["reason"] != "needs_attention" {
		t.Fatalf("resolve payout: %d %s", r.Status, r.Raw)
	}
	// Every action left exactly one audit entry, by this key.
	keyID, _ := in.store.APIKeyID(ctx, in.key)
	if n := in.count(`SELECT count(*) FROM ledger_entries WHERE kind = 'operator' AND reason = 'exception_resolve' AND operator = $1`, "api_key:"+keyID); n != 2 {
		t.Errorf("%d resolve audit entries, want 2", n)
	}
	// An operator's abandon resolves a parked payout for the merchant too.
	if _, err := in.db.PG.Exec(ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status)
		VALUES ($1, 'refund', 8453, $2, $3, 1, 'abandoned')`, sid, strings.ToLower(baseUSDC), strings.ToLower(payee)); err != nil {
		t.Fatal(err)
	}
	if r := in.do("GET", "/v1/exceptions?reason=needs_attention&status=resolved", nil, in.bearer(in.key)...); len(ids(r)) != 2 {
		t.Errorf("resolved parked payouts: %s", r.Raw)
	}
	// Revoked keys cannot act.
	if _, err := in.db.PG.Exec(ctx, `UPDATE api_keys SET revoked_at = now()`); err != nil {
		t.Fatal(err)
	}
	wantError(t, resolve(pid, map[string]any{"note": "x"}), 401, "invalid_api_key")
}
