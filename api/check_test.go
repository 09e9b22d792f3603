package api_test

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/reconciler"
)

// hints records the TxHint calls the API makes.
type hints struct {
	mu    sync.Mutex
	calls []string // sessionID + " " + txHash
}

func (h *hints) hint(_ context.Context, sessionID, txHash string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, sessionID+" "+txHash)
	return nil
}

func (h *hints) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func (h *hints) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.calls) == 0 {
		return ""
	}
	return h.calls[len(h.calls)-1]
}

// The txHash hint is looked up while a deposit can still count: before
// one is detected and while the session is processing (a top-up of an
// underpaid session). A terminal session never changes, so its hint is not
// looked up; the check still answers with the session.
func TestCheckHintByStatus(t *testing.T) {
	h := &hints{}
	b := setup(t, func(c *api.Config) { c.TxHint = h.hint })
	ctx := context.Background()
	const tx = "0x" + "AB12000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		status string
		lookup bool
	}{
		{"requires_payment_method", true},
		{"waiting_payment", true},
		{"processing", true},
		{"succeeded", false},
		{"bounced", false},
		{"expired", false},
	} {
		t.Run(tc.status, func(t *testing.T) {
			id, secret := b.create(b.key)
			if _, err := b.db.PG.Exec(ctx, `UPDATE sessions SET status = $2 WHERE id = $1`, id, tc.status); err != nil {
				t.Fatal(err)
			}
			before := h.count()
			r := b.do("PUT", "/v1/sessions/"+id+"/check", map[string]any{"clientSecret": secret, "txHash": tx})
			if r.Status != 200 {
				t.Fatalf("check: %d %s", r.Status, r.Raw)
			}
			if s := r.Body["session"].(map[string]any); s["sessionId"] != id || s["status"] != tc.status {
				t.Errorf("check answered %v, want session %s in %s", s, id, tc.status)
			}
			looked := h.count() - before
			if tc.lookup && (looked != 1 || h.last() != id+" "+strings.ToLower(tx)) {
				t.Errorf("%s: %d lookups (last %q), want one for %s with the hash in lowercase", tc.status, looked, h.last(), id)
			}
			if !tc.lookup && looked != 0 {
				t.Errorf("%s: %d lookups, want none for a terminal session", tc.status, looked)
			}
		})
	}
}

// A payer who underpaid and then tops up says so with PUT check and the
// top-up's txHash while the session is processing: the top-up is credited
// at once, through the same lookup as the first deposit (the reconciler's
// AttributeTx against a real chain).
func TestCheckHintTopUpWhileProcessing(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 8453})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Test USD", "TUSD", 6)
	if err != nil {
		t.Fatal(err)
	}
	payer := anvil.DevAddress(1)
	if _, err := node.Mint(ctx, anvil.DevKeys[0], token, payer, big.NewInt(100_000_000)); err != nil {
		t.Fatal(err)
	}
	client, err := ethclient.DialContext(ctx, node.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	chains, err := chain.NewRegistry([]chain.Chain{{ID: 8453, Name: "Base", Family: chain.FamilyEVM,
		Tokens: []chain.Token{{Symbol: "USDC", Address: strings.ToLower(token.Hex()), Decimals: 6}}}})
	if err != nil {
		t.Fatal(err)
	}
	var rec *reconciler.Reconciler
	b := setup(t, func(c *api.Config) {
		c.Chains = chains
		c.TxHint = func(ctx context.Context, sessionID, txHash string) error {
			_, err := rec.AttributeTx(ctx, map[uint64]reconciler.TxReader{8453: client}, sessionID, txHash)
			return err
		}
	})
	// The chain's blocks carry the wall clock; so must the session.
	b.now.Store(time.Now().UnixNano())
	if rec, err = reconciler.New(reconciler.Config{Chains: chains, Postgres: b.db.PG, ClickHouse: b.db.CH, Registerer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	r := b.do("POST", "/v1/sessions", set(set(validCreate(), "destination.chainId", 8453), "destination.tokenAddress", token.Hex()), b.bearer(b.key)...)
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	s := r.Body["session"].(map[string]any)
	id, secret := s["sessionId"].(string), s["clientSecret"].(string)
	pm := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	if pm.Status != 200 {
		t.Fatalf("payment method: %d %s", pm.Status, pm.Raw)
	}
	receiver := common.HexToAddress(pm.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string))

	pay := func(units int64) string {
		t.Helper()
		rc, err := node.Transfer(ctx, anvil.DevKeys[1], token, receiver, big.NewInt(units))
		if err != nil {
			t.Fatal(err)
		}
		check := b.do("PUT", "/v1/sessions/"+id+"/check", map[string]any{"clientSecret": secret, "txHash": rc.TxHash.Hex()})
		if check.Status != 200 {
			t.Fatalf("check: %d %s", check.Status, check.Raw)
		}
		return check.Body["session"].(map[string]any)["status"].(string)
	}
	credited := func() (n int, units string) {
		t.Helper()
		if err := b.db.PG.QueryRow(ctx, `SELECT count(*), coalesce(sum(amount), 0)::text FROM deposits WHERE session_id = $1 AND credited`, id).Scan(&n, &units); err != nil {
			t.Fatal(err)
		}
		return n, units
	}
	if st := pay(4_000_000); st != "processing" {
		t.Fatalf("after the first 4.00 of 10.00: %s, want processing", st)
	}
	if n, units := credited(); n != 1 || units != "4000000" {
		t.Fatalf("after the first deposit: %d credited, %s units; want 1, 4000000", n, units)
	}
	if st := pay(6_000_000); st != "processing" {
		t.Errorf("after the top-up: %s, want processing", st)
	}
	if n, units := credited(); n != 2 || units != "10000000" {
		t.Errorf("after the top-up's check: %d credited deposits, %s units; want 2, 10000000 (the top-up looked up while processing)", n, units)
	}
}

// The txHash lookup asks every configured chain's node and needs only a
// client secret, so each session gets a small budget: a burst of
// TxHintBurst lookups, then one per TxHintEvery. A call over the budget is
// answered as if no hint had been sent (the hint is optional; the indexer
// finds the deposit anyway), never with an error the SDK's polling would
// trip on.
func TestCheckHintRateLimit(t *testing.T) {
	h := &hints{}
	b := setup(t, func(c *api.Config) {
		c.TxHint = h.hint
		c.TxHintEvery = 5 * time.Second
		c.TxHintBurst = 3
	})
	id, secret := b.create(b.key)
	other, otherSecret := b.create(b.key)
	check := func(id, secret string) {
		t.Helper()
		r := b.do("PUT", "/v1/sessions/"+id+"/check", map[string]any{"clientSecret": secret, "txHash": "0x" + strings.Repeat("ab", 32)})
		if s, _ := r.Body["session"].(map[string]any); r.Status != 200 || s["sessionId"] != id || s["status"] != "requires_payment_method" {
			t.Errorf("check: %d %s, want 200 with the session, over the budget or not", r.Status, r.Raw)
		}
	}
	for range 10 {
		check(id, secret)
	}
	if n := h.count(); n != 3 {
		t.Errorf("10 checks at once: %d lookups, want the burst of 3", n)
	}
	// Another session has a budget of its own.
	check(other, otherSecret)
	if n := h.count(); n != 4 {
		t.Errorf("first check of another session: %d lookups in all, want 4", n)
	}
	// A budget refills at one lookup per interval: the clock, not the
	// number of calls, decides.
	b.advance(5*time.Second - time.Millisecond)
	check(id, secret)
	if n := h.count(); n != 4 {
		t.Errorf("just short of the interval: %d lookups, want still 4", n)
	}
	b.advance(time.Millisecond)
	for range 5 {
		check(id, secret)
	}
	if n := h.count(); n != 5 {
		t.Errorf("one interval later, 5 checks: %d lookups, want one more (5)", n)
	}
	// Concurrent checks share the budget exactly; a pause of the burst's
	// length refills it.
	b.advance(15 * time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { check(id, secret) })
	}
	wg.Wait()
	if n := h.count(); n != 8 {
		t.Errorf("20 concurrent checks after a pause: %d lookups in all, want 8 (one more burst of 3)", n)
	}
	// A check without a hint costs nothing.
	for range 5 {
		if r := b.do("PUT", "/v1/sessions/"+other+"/check", map[string]any{"clientSecret": otherSecret}); r.Status != 200 {
			t.Fatalf("check without a hint: %d %s", r.Status, r.Raw)
		}
	}
	check(other, otherSecret)
	if n := h.count(); n != 9 {
		t.Errorf("checks without a hint used the budget: %d lookups, want 9", n)
	}
	// SREs see both: 9 looked up, 7+1+4+17 left out.
	families, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() == "settle_api_tx_hints_total" {
			for _, m := range f.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"looked_up": 9, "error": 0, "limited": 29}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("settle_api_tx_hints_total = %v, want %v", got, want)
	}
}
