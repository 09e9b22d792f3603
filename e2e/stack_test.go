// Package e2e runs settle end to end over HTTP: real Postgres, ClickHouse,
// two anvil chains, the API, both indexers, the reconciler, the expiry loop
// and the payout executor, all in this process.
package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/delivery"
	deliveryevm "github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/fiat/sandbox"
	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/internal/mirror"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/reconciler"
	"github.com/settle-dev/settle/webhook"
)

const (
	chainA, chainB = 31337, 31338
	payerKey       = 1 // anvil dev account that pays deposits
	onrampKey      = 4 // anvil dev account of the sandbox onramp
)

type options struct {
	sessionTTL    time.Duration
	finalityDepth uint64
	// external: the reconciler and payout executor run as separate
	// processes the test starts itself.
	external bool
	// deferIndexers: the indexers start only when the test calls
	// startIndexers.
	deferIndexers bool
	// finalizedTag: finality comes from the nodes' "finalized" block
	// instead of a depth.
	finalizedTag bool
	// sweep: the executor sweeps USDC receivers holding at least 1 USDC.
	sweep bool
	// fiat: the sandbox onramp pays USDC on chain A from anvil account
	// onrampKey.
	fiat bool
	// webhooks: a webhook dispatcher runs and the merchant has an endpoint
	// at an HTTPS receiver of the test (hooks).
	webhooks bool
}

type stack struct {
	t        *testing.T
	db       dbtest.DBs
	a, b     *anvil.Node
	usdcA    common.Address // USDC on chain A
	usdcB    common.Address // USDC on chain B
	fakeA    common.Address // a token also called USDC on chain A, not allowlisted
	merchant common.Address // TestMerchant contract on chain B
	treasury *ecdsa.PrivateKey
	// executors are the treasury's SettleExecutor per chain.
	executors map[uint64]common.Address
	url, key  string
	reg       *prometheus.Registry
	rec       *reconciler.Reconciler
	// startIndexers starts the indexers (once) when deferIndexers is set.
	startIndexers func()
	clients       map[uint64]reconciler.TxReader
	// hooks receives the merchant's webhooks (options.webhooks).
	hooks *hookReceiver
}

func newStack(t *testing.T, o options) *stack {
	t.Helper()
	if o.sessionTTL == 0 {
		o.sessionTTL = time.Hour
	}
	if o.finalityDepth == 0 {
		o.finalityDepth = 3
	}
	s := &stack{t: t, db: dbtest.Migrated(t), reg: prometheus.NewRegistry()}
	s.a = anviltest.Start(t, anvil.Config{ChainID: chainA, BlockTime: 200 * time.Millisecond})
	s.b = anviltest.Start(t, anvil.Config{ChainID: chainB, BlockTime: 200 * time.Millisecond})
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	s.usdcA, err = s.a.DeployTestToken(ctx, anvil.DevKeys[0], "USD Coin", "USDC", 6)
	must(err)
	s.usdcB, err = s.b.DeployTestToken(ctx, anvil.DevKeys[0], "USD Coin", "USDC", 6)
	must(err)
	s.fakeA, err = s.a.DeployTestToken(ctx, anvil.DevKeys[0], "USD Coin", "USDC", 6)
	must(err)
	s.merchant, err = s.b.DeployTestMerchant(ctx, anvil.DevKeys[0])
	must(err)

	master, err := hdwallet.MasterFromSeed(bytes.Repeat([]byte{42}, 32))
	must(err)
	xpub, err := master.AccountXPub()
	must(err)
	receivers, err := hdwallet.ParseXPub(xpub)
	must(err)
	s.treasury, err = master.TreasuryKey()
	must(err)
	treasury := crypto.PubkeyToAddress(s.treasury.PublicKey)
	million := big.NewInt(1_000_000_000_000) // 1,000,000 USDC
	s.executors = map[uint64]common.Address{}
	for _, x := range []struct {
		n    *anvil.Node
		usdc common.Address
	}{{s.a, s.usdcA}, {s.b, s.usdcB}} {
		must(x.n.SetBalance(ctx, treasury, new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18))))
		_, err = x.n.Mint(ctx, anvil.DevKeys[0], x.usdc, treasury, million)
		must(err)
		s.executors[x.n.ChainID()], err = x.n.DeployCode(ctx, anvil.DevKeys[0], deliveryevm.DeployData(treasury))
		must(err)
	}
	_, err = s.a.Mint(ctx, anvil.DevKeys[0], s.usdcA, anvil.DevAddress(payerKey), million)
	must(err)
	_, err = s.a.Mint(ctx, anvil.DevKeys[0], s.fakeA, anvil.DevAddress(payerKey), million)
	must(err)

	registry, err := chain.NewRegistry([]chain.Chain{
		{ID: chainA, Name: "Chain A", Family: chain.FamilyEVM, Indexed: true, Tokens: []chain.Token{{Symbol: "USDC", Address: s.usdcA.Hex(), Decimals: 6}}},
		{ID: chainB, Name: "Chain B", Family: chain.FamilyEVM, Indexed: true, Tokens: []chain.Token{{Symbol: "USDC", Address: s.usdcB.Hex(), Decimals: 6}}},
	})
	must(err)
	st := store.New(s.db.PG).ExpectChains(chainA, chainB)
	m, err := st.CreateMerchant(ctx, "e2e")
	must(err)
	s.key, _, err = st.CreateAPIKey(ctx, m.ID)
	must(err)

	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	runCtx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(runCtx)
	mir := mirror.New(mirror.Config{Store: st, ClickHouse: s.db.CH, Interval: 100 * time.Millisecond})
	hinter, err := reconciler.New(reconciler.Config{Chains: registry, Postgres: s.db.PG, ClickHouse: s.db.CH})
	must(err)
	hint := func(ctx context.Context, id, tx string) error {
		_, err := hinter.AttributeTx(ctx, s.clients, id, tx)
		return err
	}
	// The listener comes first: the API's public URL (checkout links) is
	// its address.
	ts := httptest.NewUnstartedServer(nil)
	s.url = "http://" + ts.Listener.Addr().String()
	acfg := api.Config{Chains: registry, Store: st, EVMReceivers: receivers, ReceiverCreated: mir.Kick,
		TxHint: hint, SessionTTL: o.sessionTTL, Logger: logger, Registerer: s.reg, PublicURL: s.url}
	if o.fiat {
		c, err := ethclient.Dial(s.a.URL())
		must(err)
		_, err = s.a.Mint(ctx, anvil.DevKeys[0], s.usdcA, anvil.DevAddress(onrampKey), million)
		must(err)
		onramp, err := sandbox.New(sandbox.Config{PublicURL: s.url, ChainID: chainA, Client: c, Logger: logger,
			Token: chain.Token{Symbol: "USDC", Address: strings.ToLower(s.usdcA.Hex()), Decimals: 6}, Wallet: anvil.DevKeys[onrampKey]})
		must(err)
		acfg.Fiat, acfg.Mount = onramp, map[string]http.Handler{sandbox.Path: onramp}
	}
	var ws *webhook.Store
	if o.webhooks {
		ws = webhook.NewStore(s.db.PG, webhook.Policy{AllowLoopback: true})
		acfg.Webhooks = ws
	}
	srv, err := api.New(acfg)
	must(err)
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	g.Go(func() error { return mir.Run(gctx) })
	clients := map[uint64]delivery.ChainClient{}
	s.clients = map[uint64]reconciler.TxReader{}
	var indexers []*indexer.Runner
	for _, n := range []*anvil.Node{s.a, s.b} {
		src, err := evm.New(ctx, evm.Config{URL: n.URL(), ChainName: fmt.Sprint(n.ChainID()), Registerer: s.reg})
		must(err)
		r, err := indexer.New(indexer.Config{ChainID: n.ChainID(), ChainName: fmt.Sprint(n.ChainID()), Source: src,
			Postgres: s.db.PG, ClickHouse: s.db.CH, PollInterval: 50 * time.Millisecond, FlushInterval: 50 * time.Millisecond,
			Logger: logger, Registerer: s.reg})
		must(err)
		indexers = append(indexers, r)
		c, err := ethclient.Dial(n.URL())
		must(err)
		clients[n.ChainID()] = c
		s.clients[n.ChainID()] = c
	}
	var once sync.Once
	s.startIndexers = func() {
		once.Do(func() {
			for _, r := range indexers {
				g.Go(func() error { return r.Run(gctx) })
			}
		})
	}
	if !o.deferIndexers {
		s.startIndexers()
	}
	chainOpts := map[uint64]reconciler.ChainOptions{chainA: {FinalityDepth: o.finalityDepth}, chainB: {FinalityDepth: o.finalityDepth}}
	if o.finalizedTag {
		chainOpts[chainA] = reconciler.ChainOptions{Finalized: reconciler.FinalizedTag(clients[chainA].(*ethclient.Client))}
		chainOpts[chainB] = reconciler.ChainOptions{Finalized: reconciler.FinalizedTag(clients[chainB].(*ethclient.Client))}
	}
	s.rec, err = reconciler.New(reconciler.Config{Chains: registry, Postgres: s.db.PG, ClickHouse: s.db.CH,
		Treasury: treasury.Hex(), Logger: logger, Registerer: s.reg, Interval: 50 * time.Millisecond, Options: chainOpts})
	must(err)
	if !o.external {
		g.Go(func() error { return s.rec.Run(gctx) })
		fin := map[uint64]delivery.Finality{chainA: {Depth: o.finalityDepth, Tag: o.finalizedTag}, chainB: {Depth: o.finalityDepth, Tag: o.finalizedTag}}
		pc := delivery.Config{Postgres: s.db.PG, Chains: clients, Finality: fin, Executors: s.executors, Treasury: s.treasury, Logger: logger,
			Interval: 100 * time.Millisecond, RebroadcastAfter: 2 * time.Second, WatchEvery: 200 * time.Millisecond}
		if o.sweep {
			pc.ReceiverKey = master.PrivateKey
			pc.SweepMin = map[uint64]map[common.Address]*big.Int{chainA: {s.usdcA: big.NewInt(1_000_000)}, chainB: {s.usdcB: big.NewInt(1_000_000)}}
			pc.Tokens = map[uint64][]delivery.Token{chainA: {{Address: s.usdcA, Symbol: "USDC", Decimals: 6}}, chainB: {{Address: s.usdcB, Symbol: "USDC", Decimals: 6}}}
		}
		ex, err := delivery.New(pc)
		must(err)
		g.Go(func() error { return ex.Run(gctx) })
	}
	exp := reconciler.NewExpirer(reconciler.ExpiryConfig{Store: st, Interval: 100 * time.Millisecond})
	g.Go(func() error { return exp.Run(gctx) })
	if o.webhooks {
		s.hooks = newHookReceiver(t)
		code, out := s.do("POST", "/v1/webhooks", map[string]any{"url": s.hooks.srv.URL + "/hooks"}, true)
		if code != 201 {
			t.Fatalf("registering the webhook endpoint: %d %v", code, out)
		}
		s.hooks.setSecret(out["secret"].(string))
		d, err := webhook.NewDispatcher(webhook.Config{Postgres: s.db.PG, Policy: webhook.Policy{AllowLoopback: true},
			RootCAs: s.hooks.pool(), Logger: logger, Registerer: s.reg})
		must(err)
		g.Go(func() error { return d.Run(gctx) })
	}
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("stack stopped with %v", err)
		}
	})
	return s
}

// testWriter sends logs to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (s *stack) do(method, path string, body any, auth bool) (int, map[string]any) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, s.url+path, r)
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// session creates a session and sets its EVM payment method; it returns the
// session id, client secret and receiver.
func (s *stack) session(dest map[string]any, extra map[string]any) (string, string, common.Address) {
	s.t.Helper()
	body := map[string]any{"destination": dest, "display": map[string]any{"title": "e2e", "verb": "Deposit"}}
	for k, v := range extra {
		body[k] = v
	}
	code, out := s.do("POST", "/v1/sessions", body, true)
	if code != 201 {
		s.t.Fatalf("create session: %d %v", code, out)
	}
	sess := out["session"].(map[string]any)
	id, secret := sess["sessionId"].(string), sess["clientSecret"].(string)
	code, out = s.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}}, false)
	if code != 200 {
		s.t.Fatalf("payment method: %d %v", code, out)
	}
	recv := out["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)
	return id, secret, common.HexToAddress(recv)
}

func (s *stack) get(id string) map[string]any {
	s.t.Helper()
	code, out := s.do("GET", "/v1/sessions/"+id, nil, true)
	if code != 200 {
		s.t.Fatalf("get session: %d %v", code, out)
	}
	return out["session"].(map[string]any)
}

// waitStatus polls the session until it has status want; any terminal
// status other than want fails at once.
func (s *stack) waitStatus(id, want string, within time.Duration) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		sess := s.get(id)
		st := sess["status"].(string)
		if st == want {
			return sess
		}
		if (st == "succeeded" || st == "bounced" || st == "expired") && st != want {
			s.t.Fatalf("session %s reached %s, want %s: %v", id, st, want, sess)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("session %s still %s after %s, want %s: %v", id, st, within, want, sess)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *stack) pay(n *anvil.Node, token, to common.Address, units int64) common.Hash {
	s.t.Helper()
	r, err := n.Transfer(context.Background(), anvil.DevKeys[payerKey], token, to, big.NewInt(units))
	if err != nil {
		s.t.Fatal(err)
	}
	return r.TxHash
}

func (s *stack) balance(n *anvil.Node, token, owner common.Address) *big.Int {
	s.t.Helper()
	b, err := n.BalanceOf(context.Background(), token, owner)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// ledger returns the ledger rows of a session from ClickHouse ("kind
// reason amount", sorted), waiting until at least n are there.
func (s *stack) ledger(id string, n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rows, err := s.db.CH.Query(context.Background(), `SELECT toString(kind), reason, amount_raw FROM ledger FINAL WHERE session_id = ? ORDER BY kind, entry_id`, id)
		if err != nil {
			s.t.Fatal(err)
		}
		var out []string
		for rows.Next() {
			var kind, reason, amount string
			if err := rows.Scan(&kind, &reason, &amount); err != nil {
				s.t.Fatal(err)
			}
			out = append(out, strings.TrimSuffix(kind+" "+reason, " ")+" "+amount)
		}
		rows.Close()
		if len(out) >= n || time.Now().After(deadline) {
			sort.Strings(out)
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}
