package delivery

import (
	"context"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/dbtest"
)

// opDB is a migrated database with one merchant, for the operator API,
// which needs no chain.
type opDB struct {
	t   *testing.T
	ctx context.Context
	db  dbtest.DBs
}

func newOpDB(t *testing.T) *opDB {
	t.Helper()
	db := dbtest.Migrated(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := db.PG.Exec(ctx, `INSERT INTO merchants (id, name) VALUES ('m_test', 'Test merchant')`); err != nil {
		t.Fatal(err)
	}
	return &opDB{t: t, ctx: ctx, db: db}
}

const (
	opChain = 31337
	opToken = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
)

// opPayout describes a payout row to insert; zero fields stay NULL.
type opPayout struct {
	status      string
	calldata    bool
	runner      string
	fundHash    string
	txHash      string
	nonce       int64
	attentionTx bool // attention_sent
	err         string
}

// add inserts a session and a delivery payout as described.
func (o *opDB) add(p opPayout) int64 {
	o.t.Helper()
	sid := randomHex(o.t, 16)
	to := hexAddr(randomAddress(o.t))
	if _, err := o.db.PG.Exec(o.ctx, `INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ($1, 'm_test', 'processing', 'evm', $2, $3, 'anvil', $4, 'TUSD', 6, '{}', 'secret', now(), now() + interval '1 hour')`,
		sid, to, opChain, opToken); err != nil {
		o.t.Fatal(err)
	}
	null := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	var calldata, nonce any
	if p.calldata {
		calldata = "0x12345678"
	}
	if p.txHash != "" {
		nonce = p.nonce
	}
	var id int64
	if err := o.db.PG.QueryRow(o.ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, calldata, status,
		from_address, runner_address, fund_tx_hash, tx_hash, nonce, attention_sent, error)
		VALUES ($1, 'delivery', $2, $3, $4, 2500000, $5, $6, '0x00000000000000000000000000000000000000aa', $7, $8, $9, $10, $11, $12) RETURNING id`,
		sid, opChain, opToken, to, calldata, p.status, null(p.runner), null(p.fundHash), null(p.txHash), nonce, p.attentionTx, null(p.err)).
		Scan(&id); err != nil {
		o.t.Fatal(err)
	}
	return id
}

// state is a payout's status, error and attention_sent.
func (o *opDB) state(id int64) (string, *string, bool) {
	o.t.Helper()
	var (
		status string
		msg    *string
		sent   bool
	)
	if err := o.db.PG.QueryRow(o.ctx, `SELECT status, error, attention_sent FROM payouts WHERE id = $1`, id).Scan(&status, &msg, &sent); err != nil {
		o.t.Fatal(err)
	}
	return status, msg, sent
}

// opEntry is a ledger entry an operator action wrote.
type opEntry struct {
	entryID, reason, session, merchant, token, symbol string
	decimals                                          int16
	from, to, tx, amount, operator, note              string
}

func (o *opDB) entries() []opEntry {
	o.t.Helper()
	rows, err := o.db.PG.Query(o.ctx, `SELECT entry_id, reason, session_id, merchant_id, token, symbol, decimals,
		from_address, to_address, tx_hash, amount::text, operator, note FROM ledger_entries WHERE kind = 'operator' ORDER BY id`)
	if err != nil {
		o.t.Fatal(err)
	}
	defer rows.Close()
	var out []opEntry
	for rows.Next() {
		var e opEntry
		if err := rows.Scan(&e.entryID, &e.reason, &e.session, &e.merchant, &e.token, &e.symbol, &e.decimals,
			&e.from, &e.to, &e.tx, &e.amount, &e.operator, &e.note); err != nil {
			o.t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		o.t.Fatal(err)
	}
	return out
}

func (o *opDB) ledgerRows() int {
	o.t.Helper()
	var n int
	if err := o.db.PG.QueryRow(o.ctx, `SELECT count(*) FROM ledger_entries`).Scan(&n); err != nil {
		o.t.Fatal(err)
	}
	return n
}

func TestOperatorListAndRetry(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	runner, fund := hexAddr(randomAddress(t)), "0x"+randomHex(t, 32)
	id := o.add(opPayout{status: "needs_attention", calldata: true, runner: runner, fundHash: fund,
		err: "chain 31337 has no executor_address any more, but payout 1 funded runner …"})
	o.add(opPayout{status: "pending"})
	o.add(opPayout{status: "abandoned", err: "old"})

	list, err := ListAttention(o.ctx, o.db.PG)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("ListAttention = %+v, want only payout %d", list, id)
	}
	p := list[0]
	if p.ID != id || p.Kind != "delivery" || p.ChainID != opChain || p.Token != opToken || p.Amount.Cmp(big.NewInt(2500000)) != 0 ||
		p.Status != "needs_attention" || !strings.Contains(p.Error, "no executor_address") || p.InFlight ||
		p.Runner != runner || p.FundTxHash != fund || p.TxHash != "" || p.CreatedAt.IsZero() || p.Age < 0 || p.Age > time.Minute {
		t.Errorf("listed %+v", p)
	}
	before := o.ledgerRows()

	if err := Retry(o.ctx, o.db.PG, id, "alice", "  executor_address restored  "); err != nil {
		t.Fatal(err)
	}
	if status, msg, _ := o.state(id); status != "pending" || msg != nil {
		t.Errorf("after retry: status %s, error %v; want pending, no error", status, deref(msg))
	}
	got := o.entries()
	if len(got) != 1 || o.ledgerRows() != before+1 {
		t.Fatalf("ledger after one retry: %+v (%d rows, had %d)", got, o.ledgerRows(), before)
	}
	e := got[0]
	if !strings.HasPrefix(e.entryID, "operator:retry:") || e.reason != "payout_retry" || e.session != p.SessionID || e.merchant != "m_test" ||
		e.token != opToken || e.symbol != "TUSD" || e.decimals != 6 || e.to != p.To || e.tx != "" || e.amount != "0" ||
		e.operator != "alice" || e.note != "executor_address restored" || e.from != "0x00000000000000000000000000000000000000aa" {
		t.Errorf("ledger entry %+v", e)
	}
	if list, err := ListAttention(o.ctx, o.db.PG); err != nil || len(list) != 0 {
		t.Errorf("after retry, ListAttention = %+v, %v; want none", list, err)
	}
	// The executor resumes it: it is open again.
	open, err := listOpen(o.ctx, o.db.PG, []int64{opChain})
	if err != nil {
		t.Fatal(err)
	}
	if !containsOpen(open, id) {
		t.Errorf("retried payout %d not open: %+v", id, open)
	}
}

func containsOpen(open []openPayout, id int64) bool {
	for _, o := range open {
		if o.id == id {
			return true
		}
	}
	return false
}

// Only a parked payout may be touched: every other status belongs to the
// executor or is finished, and a refusal changes nothing.
func TestOperatorRefusesPayoutsNotParked(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	before := o.ledgerRows()
	for _, status := range []string{"pending", "sent", "mined", "reverted", "confirmed", "abandoned"} {
		p := opPayout{status: status, err: "kept"}
		if status != "pending" {
			p.txHash, p.nonce = "0x"+randomHex(t, 32), 7
		}
		id := o.add(p)
		for name, act := range map[string]func(context.Context, *pgxpool.Pool, int64, string, string) error{"retry": Retry, "abandon": Abandon} {
			err := act(o.ctx, o.db.PG, id, "alice", "note")
			if !errors.Is(err, ErrNotParked) || !strings.Contains(err.Error(), status) {
				t.Errorf("%s of a %s payout: %v, want ErrNotParked naming the status", name, status, err)
			}
		}
		if got, msg, _ := o.state(id); got != status || deref(msg) != "kept" {
			t.Errorf("%s payout changed to %s, error %s", status, got, deref(msg))
		}
	}
	if err := Retry(o.ctx, o.db.PG, 999_999, "alice", "note"); !errors.Is(err, ErrNoPayout) {
		t.Errorf("retry of a missing payout: %v, want ErrNoPayout", err)
	}
	id := o.add(opPayout{status: "needs_attention", err: "parked"})
	for _, who := range [][2]string{{"alice", " "}, {"", "a note"}} {
		if err := Abandon(o.ctx, o.db.PG, id, who[0], who[1]); err == nil || errors.Is(err, ErrNotParked) {
			t.Errorf("abandon by %q with note %q: %v, want a refusal", who[0], who[1], err)
		}
	}
	if status, _, _ := o.state(id); status != "needs_attention" {
		t.Errorf("refused abandon changed the payout to %s", status)
	}
	if n := o.ledgerRows(); n != before {
		t.Errorf("refusals wrote %d ledger rows", n-before)
	}
}

func TestOperatorAbandon(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	tx := "0x" + randomHex(t, 32)
	id := o.add(opPayout{status: "needs_attention", txHash: tx, nonce: 4, err: "refund transfer reverted (final): blacklisted"})
	if err := Abandon(o.ctx, o.db.PG, id, "bob", "refunded by hand from the ops wallet"); err != nil {
		t.Fatal(err)
	}
	status, msg, _ := o.state(id)
	if status != "abandoned" || deref(msg) != "refund transfer reverted (final): blacklisted" {
		t.Errorf("after abandon: %s, error %s; want abandoned with the reason kept", status, deref(msg))
	}
	got := o.entries()
	if len(got) != 1 || got[0].reason != "payout_abandon" || got[0].operator != "bob" || got[0].note != "refunded by hand from the ops wallet" ||
		got[0].tx != tx || got[0].amount != "0" || !strings.HasPrefix(got[0].entryID, "operator:abandon:") {
		t.Errorf("ledger after abandon: %+v", got)
	}
	open, err := listOpen(o.ctx, o.db.PG, []int64{opChain})
	if err != nil {
		t.Fatal(err)
	}
	if containsOpen(open, id) {
		t.Errorf("abandoned payout %d is open to the executor", id)
	}
	if list, err := ListAttention(o.ctx, o.db.PG); err != nil || len(list) != 0 {
		t.Errorf("ListAttention after abandon = %+v, %v", list, err)
	}
	if err := Retry(o.ctx, o.db.PG, id, "bob", "changed my mind"); !errors.Is(err, ErrNotParked) {
		t.Errorf("retry of an abandoned payout: %v, want ErrNotParked", err)
	}
	// The session is left for the operator.
	var session string
	if err := o.db.PG.QueryRow(o.ctx, `SELECT s.status::text FROM sessions s JOIN payouts p ON p.session_id = s.id WHERE p.id = $1`, id).Scan(&session); err != nil || session != "processing" {
		t.Errorf("session of the abandoned payout: %q, %v; want processing", session, err)
	}
}

// A plain transfer already signed (and no longer followed) is never
// signed again under a new nonce; one in flight goes back to 'sent' and
// keeps its nonce.
func TestOperatorRetrySignedTransfer(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	tx := "0x" + randomHex(t, 32)
	id := o.add(opPayout{status: "needs_attention", txHash: tx, nonce: 9, err: "refund transfer reverted (final): paused"})
	err := Retry(o.ctx, o.db.PG, id, "alice", "token unpaused")
	if !errors.Is(err, ErrTransferSigned) || !strings.Contains(err.Error(), tx) || !strings.Contains(err.Error(), "abandon") {
		t.Errorf("retry of a signed transfer: %v, want ErrTransferSigned naming %s and abandon", err, tx)
	}
	if status, msg, _ := o.state(id); status != "needs_attention" || msg == nil {
		t.Errorf("refused retry changed the payout: %s", status)
	}
	if n := len(o.entries()); n != 0 {
		t.Errorf("refused retry wrote %d ledger entries", n)
	}
	// A call payout whose execute was mined and reverted: a new execute of
	// the same runner can never pay twice.
	call := o.add(opPayout{status: "needs_attention", calldata: true, runner: hexAddr(randomAddress(t)), fundHash: "0x" + randomHex(t, 32),
		txHash: "0x" + randomHex(t, 32), nonce: 10, err: "execute reverted: the funds are still at runner"})
	if err := Retry(o.ctx, o.db.PG, call, "alice", "node fixed"); err != nil {
		t.Errorf("retry of a call payout whose execute reverted: %v", err)
	}
	if status, _, _ := o.state(call); status != "pending" {
		t.Errorf("retried call payout is %s, want pending", status)
	}

	for _, calldata := range []bool{false, true} {
		p := opPayout{status: "needs_attention", calldata: calldata, txHash: "0x" + randomHex(t, 32), nonce: 11, attentionTx: true,
			err: "stuck at the fee ceiling"}
		if calldata {
			p.runner, p.fundHash = hexAddr(randomAddress(t)), "0x"+randomHex(t, 32)
		}
		id := o.add(p)
		if list, err := ListAttention(o.ctx, o.db.PG); err != nil || len(list) == 0 || !list[len(list)-1].InFlight {
			t.Errorf("in-flight payout listed as %+v, %v", list, err)
		}
		if err := Retry(o.ctx, o.db.PG, id, "alice", "max fee raised"); err != nil {
			t.Fatalf("retry of an in-flight payout (calldata %v): %v", calldata, err)
		}
		if status, msg, sent := o.state(id); status != "sent" || msg != nil || sent {
			t.Errorf("in-flight payout (calldata %v) after retry: %s, error %s, attention_sent %v; want sent", calldata, status, deref(msg), sent)
		}
	}
}

// Concurrent operators: the row lock lets exactly one action happen.
func TestOperatorConcurrentActions(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	for _, mix := range []bool{false, true} {
		id := o.add(opPayout{status: "needs_attention", err: "parked"})
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			act := Retry
			if mix && i%2 == 1 {
				act = Abandon
			}
			wg.Go(func() { errs[i] = act(o.ctx, o.db.PG, id, "op", "race") })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrNotParked):
				t.Errorf("concurrent action: %v", err)
			}
		}
		var entries int
		if err := o.db.PG.QueryRow(o.ctx, `SELECT count(*) FROM ledger_entries l JOIN payouts p ON p.session_id = l.session_id
			WHERE p.id = $1 AND l.kind = 'operator'`, id).Scan(&entries); err != nil {
			t.Fatal(err)
		}
		if ok != 1 || entries != 1 {
			t.Errorf("mix %v: %d actions succeeded, %d ledger entries; want exactly one of each", mix, ok, entries)
		}
	}
}

// settle_payouts_needing_attention counts parked payouts per configured
// chain, and drops to 0 once they are handled.
func TestAttentionGauge(t *testing.T) {
	t.Parallel()
	o := newOpDB(t)
	reg := prometheus.NewRegistry()
	e := &Executor{pg: o.db.PG, chains: map[uint64]Driver{opChain: nil, 5: nil}, metrics: newMetrics(reg), logger: slog.New(slog.DiscardHandler)}
	a := o.add(opPayout{status: "needs_attention", err: "x"})
	o.add(opPayout{status: "needs_attention", err: "y"})
	o.add(opPayout{status: "pending"})
	e.updateAttention(o.ctx)
	gauge := func(chainID string) float64 {
		return metricValue(t, reg, "settle_payouts_needing_attention", map[string]string{"chain_id": chainID})
	}
	if g, other := gauge("31337"), gauge("5"); g != 2 || other != 0 {
		t.Errorf("gauge = %v (chain 5: %v), want 2 and 0", g, other)
	}
	if err := Abandon(o.ctx, o.db.PG, a, "op", "by hand"); err != nil {
		t.Fatal(err)
	}
	e.updateAttention(o.ctx)
	if g := gauge("31337"); g != 2 {
		t.Errorf("gauge refreshed within balanceEvery: %v", g)
	}
	e.metrics.attentionAt = time.Time{}
	e.updateAttention(o.ctx)
	if g := gauge("31337"); g != 1 {
		t.Errorf("gauge after abandoning one = %v, want 1", g)
	}
}

// Through the executor: a call payout parks on a chain without an
// executor contract; once one is configured, an operator's retry lets it
// be delivered, and the gauge follows.
func TestRetryAfterAttentionDelivers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	merchant, err := f.node.DeployTestMerchant(f.ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	deposit, err := anvil.MerchantDepositCalldata(f.token, big.NewInt(2_000_000), [32]byte{7})
	if err != nil {
		t.Fatal(err)
	}
	id := f.addPayout(merchant, 2_000_000, deposit)
	bare, reg := f.executor(func(c *Config) { c.Executors = nil })
	f.runUntil(bare, 10*time.Second, func() bool { return f.payout(id).Status == "needs_attention" })
	bare.metrics.attentionAt = time.Time{}
	if _, err := bare.RunOnce(f.ctx); err != nil {
		t.Fatal(err)
	}
	chainID := new(big.Int).SetUint64(f.node.ChainID()).String()
	if g := metricValue(t, reg, "settle_payouts_needing_attention", map[string]string{"chain_id": chainID}); g != 1 {
		t.Errorf("gauge with one parked payout = %v", g)
	}
	if p := f.payout(id); p.Status != "needs_attention" || p.FundHash != nil {
		t.Fatalf("parked payout was touched: %+v", p)
	}

	if err := Retry(f.ctx, f.db.PG, id, "alice", "executor deployed"); err != nil {
		t.Fatal(err)
	}
	e, reg2 := f.executor(nil)
	f.runUntil(e, 30*time.Second, f.status(id))
	if p := f.payout(id); p.Status != "mined" {
		t.Fatalf("retried payout: %+v error %s", p, deref(p.Error))
	}
	if got := f.balance(merchant); got.Int64() != 2_000_000 {
		t.Errorf("merchant holds %s, want 2000000", got)
	}
	if g := metricValue(t, reg2, "settle_payouts_needing_attention", map[string]string{"chain_id": chainID}); g != 0 {
		t.Errorf("gauge after the retry = %v, want 0", g)
	}
	var n int
	if err := f.db.PG.QueryRow(f.ctx, `SELECT count(*) FROM ledger_entries WHERE kind = 'operator' AND reason = 'payout_retry' AND note = 'executor deployed'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("operator ledger entries: %d, %v", n, err)
	}
}
