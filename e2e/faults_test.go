package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/settle-dev/settle/internal/anvil"
)

// The fault suite runs seeded random schedules over the real stack: two
// anvil chains mined block by block, an indexer per chain behind a flaky
// RPC proxy, the reconciler and the payout executor as child processes
// (SIGKILLed and restarted at random points, sometimes two of a kind at
// once), and deposits of every shape (exact, under, over, split across
// chains, wrong token, late, none) interleaved with reorgs of every depth
// up to the finality depth, including one at the boundary: a deposit one
// confirmation short of final is removed. After each schedule it checks
// the invariants against the chains themselves (see checkInvariants).
//
// SETTLE_FAULT_SCHEDULES sets how many schedules run (default 20, `make
// test-faults` runs 200), SETTLE_FAULT_SEED the first seed (default 1), and
// SETTLE_FAULT_REPLAY=N runs the one schedule with seed N.
func TestFaultSchedules(t *testing.T) {
	n, first := envUint(t, "SETTLE_FAULT_SCHEDULES", 20), envUint(t, "SETTLE_FAULT_SEED", 1)
	if r := os.Getenv("SETTLE_FAULT_REPLAY"); r != "" {
		n, first = 1, envUint(t, "SETTLE_FAULT_REPLAY", 0)
	}
	var total faultStats
	start := time.Now()
	for i := range n {
		seed := first + i
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			st := runSchedule(t, seed)
			total.add(st)
			if len(st.violations) > 0 {
				t.Errorf("schedule %d broke %d invariants; replay with SETTLE_FAULT_REPLAY=%d go test ./e2e -run 'TestFaultSchedules' -v:\n  %s",
					seed, len(st.violations), seed, strings.Join(st.violations, "\n  "))
			}
		})
		if !ok && os.Getenv("SETTLE_FAULT_KEEP_GOING") == "" {
			break
		}
	}
	t.Logf("fault suite: %d schedules in %s: %d sessions, %d payments, %d kills, %d reorgs (%d at the finality boundary, %d A→B→A), %d double processes, %d RPC faults injected, %d violations",
		total.schedules, time.Since(start).Round(time.Second), total.sessions, total.payments, total.kills, total.reorgs, total.boundary, total.aba,
		total.doubles, total.rpcFaults, len(total.violations))
}

func envUint(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

type faultStats struct {
	schedules, sessions, payments, kills, reorgs, boundary, aba, doubles, rpcFaults int
	violations                                                                      []string
}

func (s *faultStats) add(o faultStats) {
	s.schedules++
	s.sessions += o.sessions
	s.payments += o.payments
	s.kills += o.kills
	s.reorgs += o.reorgs
	s.boundary += o.boundary
	s.aba += o.aba
	s.doubles += o.doubles
	s.rpcFaults += o.rpcFaults
	s.violations = append(s.violations, o.violations...)
}

const faultFinality = 3

// miner mines one block on each chain every period until stopped; a
// paused miner lets a step control the chain's head exactly.
type miner struct {
	mu     sync.Mutex
	paused bool
	stop   chan struct{}
	done   chan struct{}
}

func startMiner(t *testing.T, period time.Duration, nodes ...*anvil.Node) *miner {
	m := &miner{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tk.C:
			}
			m.mu.Lock()
			if !m.paused {
				for _, n := range nodes {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_ = n.Mine(ctx, 1)
					cancel()
				}
			}
			m.mu.Unlock()
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *miner) pause() {
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
}

func (m *miner) resume() {
	m.mu.Lock()
	m.paused = false
	m.mu.Unlock()
}

func (m *miner) close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// procs runs the stack's processes as children of the test binary.
type procs struct {
	t       *testing.T
	cfg     childConfig
	urls    map[uint64]string // indexer RPC (the flaky proxies)
	mu      sync.Mutex
	running map[string]*exec.Cmd
}

func (p *procs) start(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[name] != nil {
		return
	}
	c := p.cfg
	role, _, _ := strings.Cut(name, "#")
	c.Role = role
	switch name {
	case "indexer#A":
		c.Role, c.Chain, c.URL = "indexer", chainA, p.urls[chainA]
	case "indexer#B":
		c.Role, c.Chain, c.URL = "indexer", chainB, p.urls[chainB]
	}
	j, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(j))
	cmd.Stdout, cmd.Stderr = nil, nil // quiet: errors after SIGKILLs are expected
	if os.Getenv("SETTLE_FAULT_CHILD_LOGS") != "" {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.running[name] = cmd
}

// kill SIGKILLs a child (and reaps it); it reports whether it ran.
func (p *procs) kill(name string) bool {
	p.mu.Lock()
	cmd := p.running[name]
	delete(p.running, name)
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	return true
}

func (p *procs) killAll() {
	p.mu.Lock()
	names := make([]string, 0, len(p.running))
	for n := range p.running {
		names = append(names, n)
	}
	p.mu.Unlock()
	for _, n := range names {
		p.kill(n)
	}
}

// event is one step of a schedule, at an offset from its start.
type event struct {
	at   time.Duration
	what string
	do   func()
}

// plannedSession is a session and how it is (or is not) paid.
type plannedSession struct {
	id       string
	recv     common.Address
	destNode *anvil.Node
	amount   int64 // requested units; 0 for an open amount
	kind     string
}

var transferTopic = crypto.Keccak256Hash([]byte("Transfer(address,address,uint256)"))

func runSchedule(t *testing.T, seed uint64) faultStats {
	rng := rand.New(rand.NewPCG(seed, 1))
	ttl := 8*time.Second + time.Duration(rng.IntN(4000))*time.Millisecond
	s := newStack(t, options{external: true, deferIndexers: true, sessionTTL: ttl, finalityDepth: faultFinality})
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	payer := anvil.DevKeys[payerKey]
	_, err := s.b.Mint(ctx, anvil.DevKeys[0], s.usdcB, anvil.DevAddress(payerKey), big.NewInt(1_000_000_000_000))
	must(err)
	for _, n := range []*anvil.Node{s.a, s.b} {
		must(n.SetIntervalMining(ctx, 0))
	}
	m := startMiner(t, 150*time.Millisecond, s.a, s.b)
	proxies := map[uint64]*flakyRPC{chainA: newFlakyRPC(t, s.a.URL(), seed), chainB: newFlakyRPC(t, s.b.URL(), seed+1)}
	p := &procs{t: t, running: map[string]*exec.Cmd{},
		urls: map[uint64]string{chainA: proxies[chainA].URL(), chainB: proxies[chainB].URL()},
		cfg: childConfig{PG: s.db.PostgresURL, CH: s.db.ClickHouseURL, FinalityDepth: faultFinality,
			RPC:  map[uint64]string{chainA: s.a.URL(), chainB: s.b.URL()},
			USDC: map[uint64]string{chainA: s.usdcA.Hex(), chainB: s.usdcB.Hex()}, Executors: s.executors}}
	t.Cleanup(p.killAll)
	for _, name := range []string{"indexer#A", "indexer#B", "reconciler", "delivery"} {
		p.start(name)
	}

	var st faultStats
	// Sessions and their payments.
	nodes := map[uint64]*anvil.Node{chainA: s.a, chainB: s.b}
	usdc := map[uint64]common.Address{chainA: s.usdcA, chainB: s.usdcB}
	kinds := []string{"exact", "under", "under_topup", "over", "split_chains", "wrong_token", "late", "none", "open"}
	var sessions []*plannedSession
	var events []event
	payAt := func(at time.Duration, chainID uint64, token common.Address, to common.Address, units int64) {
		events = append(events, event{at: at, what: fmt.Sprintf("pay %d on %d", units, chainID), do: func() {
			st.payments++
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if _, err := nodes[chainID].Transfer(pctx, payer, token, to, big.NewInt(units)); err != nil {
				t.Logf("payment on %d failed (a reorg?): %v", chainID, err)
			}
		}})
	}
	k := 4 + rng.IntN(5)
	window := ttl - 2*time.Second
	for i := range k {
		dest := uint64(chainA)
		if rng.IntN(2) == 1 {
			dest = chainB
		}
		ps := &plannedSession{kind: kinds[rng.IntN(len(kinds))], amount: 1_000_000 * int64(1+rng.IntN(2)), destNode: nodes[dest]}
		amount := fmt.Sprint(ps.amount / 1_000_000)
		if ps.kind == "open" {
			ps.amount, amount = 0, ""
		}
		ps.id, _, ps.recv = s.session(evmDest(int(dest), usdc[dest], anvil.DevAddress(7+i%3), amount), nil)
		sessions = append(sessions, ps)
		at := time.Duration(rng.Int64N(int64(window)))
		src := uint64(chainA)
		if rng.IntN(3) == 0 {
			src = chainB
		}
		switch ps.kind {
		case "exact":
			payAt(at, src, usdc[src], ps.recv, ps.amount)
		case "under":
			payAt(at, src, usdc[src], ps.recv, ps.amount/2)
		case "under_topup":
			payAt(at, src, usdc[src], ps.recv, ps.amount/2)
			payAt(at+time.Duration(rng.IntN(1500))*time.Millisecond, src, usdc[src], ps.recv, ps.amount-ps.amount/2)
		case "over":
			payAt(at, src, usdc[src], ps.recv, ps.amount+250_000)
		case "split_chains":
			payAt(at, chainA, s.usdcA, ps.recv, ps.amount/2)
			payAt(at+time.Duration(rng.IntN(1500))*time.Millisecond, chainB, s.usdcB, ps.recv, ps.amount-ps.amount/2)
		case "wrong_token":
			payAt(at, chainA, s.fakeA, ps.recv, ps.amount)
		case "late":
			payAt(ttl+time.Second+time.Duration(rng.IntN(2000))*time.Millisecond, src, usdc[src], ps.recv, ps.amount)
		case "open":
			payAt(at, src, usdc[src], ps.recv, 1_000_000+int64(rng.IntN(1_000_000)))
		}
	}
	st.sessions = len(sessions)
	// The boundary session: paid once, and that deposit is reorged away
	// one confirmation short of final.
	boundaryID, _, boundaryRecv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(9), "1"), nil)
	st.sessions++
	events = append(events, event{at: time.Duration(rng.Int64N(int64(window))), what: "boundary reorg", do: func() {
		if s.boundaryReorg(m, s.a, s.usdcA, boundaryRecv) {
			st.boundary++
			st.reorgs++
		}
	}})

	// The A→B→A session: its deposit's block is replaced and then comes
	// back, the same block with the same hash.
	abaID, _, abaRecv := s.session(evmDest(chainB, s.usdcB, anvil.DevAddress(8), "1"), nil)
	st.sessions++
	events = append(events, event{at: time.Duration(rng.Int64N(int64(window))), what: "A→B→A reorg", do: func() {
		if s.abaReorg(m, s.a, s.usdcA, abaRecv) {
			st.aba++
			st.reorgs += 2
		}
	}})

	// Faults.
	roles := []string{"indexer#A", "indexer#B", "reconciler", "delivery"}
	span := ttl + 4*time.Second
	for range 3 + rng.IntN(4) {
		role := roles[rng.IntN(len(roles))]
		pause := time.Duration(rng.IntN(800)) * time.Millisecond
		events = append(events, event{at: time.Duration(rng.Int64N(int64(span))), what: "kill " + role, do: func() {
			if p.kill(role) {
				st.kills++
			}
			time.Sleep(pause)
			p.start(role)
		}})
	}
	for range 1 + rng.IntN(3) {
		id := uint64(chainA)
		if rng.IntN(2) == 1 {
			id = chainB
		}
		depth := 1 + rng.IntN(faultFinality)
		events = append(events, event{at: time.Duration(rng.Int64N(int64(span))), what: fmt.Sprintf("reorg %d on %d", depth, id), do: func() {
			m.pause()
			defer m.resume()
			if err := nodes[id].Reorg(ctx, depth); err != nil {
				t.Logf("reorg: %v", err)
				return
			}
			st.reorgs++
		}})
	}
	for range 1 + rng.IntN(3) {
		id := uint64(chainA)
		if rng.IntN(2) == 1 {
			id = chainB
		}
		var f rpcFaults
		switch rng.IntN(4) {
		case 0:
			f.drop = 0.2 + 0.4*rng.Float64()
		case 1:
			f.maxDelay = time.Duration(100+rng.IntN(400)) * time.Millisecond
		case 2:
			f.staleHead = uint64(1 + rng.IntN(3))
		case 3:
			f.emptyLogs = 0.3 + 0.6*rng.Float64()
		}
		at := time.Duration(rng.Int64N(int64(span)))
		dur := time.Duration(1000+rng.IntN(2500)) * time.Millisecond
		events = append(events, event{at: at, what: fmt.Sprintf("rpc faults %+v on %d", f, id), do: func() { proxies[id].set(f) }},
			event{at: at + dur, what: fmt.Sprintf("rpc healthy on %d", id), do: func() { proxies[id].set(rpcFaults{}) }})
	}
	if rng.IntN(2) == 0 {
		role := []string{"reconciler", "delivery"}[rng.IntN(2)]
		at := time.Duration(rng.Int64N(int64(span)))
		dur := time.Duration(1000+rng.IntN(3000)) * time.Millisecond
		events = append(events, event{at: at, what: "second " + role, do: func() { st.doubles++; p.start(role + "#2") }},
			event{at: at + dur, what: "stop second " + role, do: func() { p.kill(role + "#2") }})
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at < events[j].at })

	// Run the schedule, reading every session's status through the API
	// between steps: a status that read terminal must never change.
	ids := []string{boundaryID, abaID}
	for _, ps := range sessions {
		ids = append(ids, ps.id)
	}
	seen := map[string][]string{}
	observe := func() {
		for _, id := range ids {
			code, out := s.do("GET", "/v1/sessions/"+id, nil, true)
			if code != 200 {
				continue
			}
			stt, _ := out["session"].(map[string]any)["status"].(string)
			if h := seen[id]; len(h) == 0 || h[len(h)-1] != stt {
				seen[id] = append(h, stt)
			}
		}
	}
	begin := time.Now()
	for _, ev := range events {
		for time.Since(begin) < ev.at {
			observe()
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%6s %s", time.Since(begin).Round(time.Millisecond), ev.what)
		ev.do()
	}

	// Quiet: every fault off, one process of each kind, the chains keep
	// going. Wait for every session to end (or to wait for a person).
	for _, pr := range proxies {
		pr.set(rpcFaults{})
	}
	p.kill("reconciler#2")
	p.kill("delivery#2")
	for _, name := range roles {
		p.start(name)
	}
	quietBound := 90 * time.Second
	deadline := time.Now().Add(quietBound)
	for {
		observe()
		if s.allSettled(ids) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Everything the checks look at is final.
	m.pause()
	for _, n := range []*anvil.Node{s.a, s.b} {
		must(n.Mine(ctx, faultFinality+1))
	}
	m.resume()
	time.Sleep(2 * time.Second)
	observe()
	for _, pr := range proxies {
		for _, c := range pr.injected() {
			st.rpcFaults += c
		}
	}
	st.violations = s.checkInvariants(ids, seen, quietBound)
	t.Logf("schedule %d: %d sessions, %d payments, %d kills, %d reorgs (%d boundary, %d A→B→A), %d doubles, %d rpc faults, %d violations",
		seed, st.sessions, st.payments, st.kills, st.reorgs, st.boundary, st.aba, st.doubles, st.rpcFaults, len(st.violations))
	return st
}

// boundaryReorg pays recv on node, mines the deposit's block and
// faultFinality-1 more, waits until the reconciler has attributed that
// head (so a reconciler that took the deposit for final would act on it),
// then replaces those faultFinality blocks. It reports whether the reorg
// happened at the boundary.
func (s *stack) boundaryReorg(m *miner, n *anvil.Node, token, recv common.Address) bool {
	ctx := context.Background()
	m.pause()
	defer m.resume()
	data := append(crypto.Keccak256([]byte("transfer(address,uint256)"))[:4], common.LeftPadBytes(recv.Bytes(), 32)...)
	data = append(data, common.LeftPadBytes(big.NewInt(1_000_000).Bytes(), 32)...)
	if _, err := n.SendTx(ctx, anvil.DevKeys[payerKey], &token, data); err != nil {
		s.t.Logf("boundary payment: %v", err)
		return false
	}
	if err := n.Mine(ctx, faultFinality); err != nil {
		s.t.Logf("boundary mining: %v", err)
		return false
	}
	head, err := n.Client().BlockNumber(ctx)
	if err != nil {
		return false
	}
	atBoundary := s.waitReconciled(n, head, "")
	if atBoundary {
		// Give a wrongly early finality every chance to settle it.
		time.Sleep(700 * time.Millisecond)
	}
	if err := n.Reorg(ctx, faultFinality); err != nil {
		s.t.Logf("boundary reorg: %v", err)
		return false
	}
	return atBoundary
}

// abaReorg pays recv on node in a block A, lets the reconciler attribute
// it, replaces A by a longer fork B (the reconciler un-applies the
// deposit), then brings A back: the same transactions with the same
// timestamp and base fee on the same parent make the same block hash, as
// when a node flaps between forks. It reports whether A came back exactly
// after the reconciler had read both A and B.
func (s *stack) abaReorg(m *miner, n *anvil.Node, token, recv common.Address) bool {
	ctx := context.Background()
	m.pause()
	defer m.resume()
	rpc := n.RPC()
	logf := func(format string, args ...any) bool { s.t.Logf("A→B→A: "+format, args...); return false }
	parent, err := n.Client().HeaderByNumber(ctx, nil)
	if err != nil {
		return logf("head: %v", err)
	}
	snap, err := n.Snapshot(ctx)
	if err != nil {
		return logf("snapshot: %v", err)
	}
	data := append(crypto.Keccak256([]byte("transfer(address,uint256)"))[:4], common.LeftPadBytes(recv.Bytes(), 32)...)
	data = append(data, common.LeftPadBytes(big.NewInt(1_000_000).Bytes(), 32)...)
	if _, err := n.SendTx(ctx, anvil.DevKeys[payerKey], &token, data); err != nil {
		return logf("payment: %v", err)
	}
	ts, baseFee := parent.Time+1, (*hexutil.Big)(parent.BaseFee)
	mineA := func() (*types.Block, error) {
		if err := rpc.CallContext(ctx, nil, "evm_setNextBlockTimestamp", ts); err != nil {
			return nil, err
		}
		if err := rpc.CallContext(ctx, nil, "anvil_setNextBlockBaseFeePerGas", baseFee); err != nil {
			return nil, err
		}
		if err := n.Mine(ctx, 1); err != nil {
			return nil, err
		}
		return n.Client().BlockByNumber(ctx, nil)
	}
	a, err := mineA()
	if err != nil {
		return logf("mining A: %v", err)
	}
	var raws []hexutil.Bytes
	for _, tx := range a.Transactions() {
		var raw hexutil.Bytes
		if err := rpc.CallContext(ctx, &raw, "eth_getRawTransactionByHash", tx.Hash()); err != nil {
			return logf("raw tx: %v", err)
		}
		raws = append(raws, raw)
	}
	// Both forks count only if the reconciler read each of them (an RPC
	// fault may hide a fork from the indexer).
	sawA := s.waitReconciled(n, a.NumberU64(), a.Hash().Hex())
	// B: two empty blocks on the same parent.
	if err := n.Revert(ctx, snap); err != nil {
		return logf("revert to B: %v", err)
	}
	if snap, err = n.Snapshot(ctx); err != nil {
		return logf("snapshot: %v", err)
	}
	if err := n.Mine(ctx, 2); err != nil {
		return logf("mining B: %v", err)
	}
	sawB := s.waitReconciled(n, a.NumberU64()+1, "")
	// A again, and a block on it so the chain is longer than B.
	if err := n.Revert(ctx, snap); err != nil {
		return logf("revert to A: %v", err)
	}
	for _, raw := range raws {
		if err := rpc.CallContext(ctx, nil, "eth_sendRawTransaction", raw); err != nil {
			return logf("replaying A: %v", err)
		}
	}
	a2, err := mineA()
	if err != nil {
		return logf("mining A again: %v", err)
	}
	if err := n.Mine(ctx, 2); err != nil {
		return logf("mining on A: %v", err)
	}
	if a2.Hash() != a.Hash() {
		return logf("block %d came back as %s, not %s", a.NumberU64(), a2.Hash().Hex(), a.Hash().Hex())
	}
	if !sawA || !sawB {
		return logf("the reconciler did not read both forks in time (A %v, B %v); an ordinary reorg", sawA, sawB)
	}
	return true
}

// waitReconciled waits up to 10 s for node's reconciler cursor to reach
// number (with hash, unless empty) and reports whether it did.
func (s *stack) waitReconciled(n *anvil.Node, number uint64, hash string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var cur int64
		var h string
		err := s.db.PG.QueryRow(context.Background(), `SELECT number, hash FROM reconciler_cursors WHERE chain_id = $1`, int64(n.ChainID())).Scan(&cur, &h)
		if err == nil && uint64(cur) >= number && (hash == "" || strings.EqualFold(h, hash)) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// allSettled reports whether every session has ended, or waits for a
// person (a refund in several tokens).
func (s *stack) allSettled(ids []string) bool {
	for _, id := range ids {
		var status string
		var wait *string
		if err := s.db.PG.QueryRow(context.Background(), `SELECT status, settle_wait FROM sessions WHERE id = $1`, id).Scan(&status, &wait); err != nil {
			return false
		}
		if status == "succeeded" || status == "bounced" || status == "expired" || status == "processing" && wait != nil && *wait == "manual_refund" {
			continue
		}
		if st := s.get(id)["status"]; st == "expired" {
			continue // read as expired; the expiry loop persists it
		}
		return false
	}
	return true
}

type transferKey struct {
	chain     uint64
	blockHash string
	tx        string
	index     uint
}

type onchainTransfer struct {
	transferKey
	block     uint64
	time      time.Time
	token     string
	from, to  string
	amount    *big.Int
	canonical bool
}

// checkInvariants compares what settle recorded with the chains' own
// logs, and returns one line per violation:
//
//  1. every canonical transfer into a receiver is a deposit exactly once,
//     final, credited only if its token is allowlisted on that chain and it
//     was mined before the deadline, else an exception with a reason;
//  2. no deposit on a removed block counts (so no session settles on one);
//  3. at most one delivery and one refund per session, never both paid;
//     every treasury transfer on chain is a payout's;
//  4. the treasury's outflow per chain and token equals the ledger's
//     deliveries and refunds;
//  5. a status that read terminal never changed, in the API and in the
//     outbox;
//  6. nothing is left processing (but refunds waiting for a person) or
//     unexpired past its deadline once the chains are quiet;
//  7. each ended session balances: a delivery pays the requested amount
//     (or everything credited) and the surplus is an overpaid exception; a
//     refund returns everything credited.
func (s *stack) checkInvariants(ids []string, seen map[string][]string, quiet time.Duration) []string {
	ctx := context.Background()
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }
	treasury := strings.ToLower(crypto.PubkeyToAddress(s.treasury.PublicKey).Hex())
	allow := map[uint64]string{chainA: strings.ToLower(s.usdcA.Hex()), chainB: strings.ToLower(s.usdcB.Hex())}

	// The chains' canonical transfers.
	var all []onchainTransfer
	for _, n := range []*anvil.Node{s.a, s.b} {
		head, err := n.Client().BlockNumber(ctx)
		if err != nil {
			return []string{fmt.Sprintf("reading head of %d: %v", n.ChainID(), err)}
		}
		logs, err := n.Client().FilterLogs(ctx, ethereum.FilterQuery{FromBlock: big.NewInt(0), ToBlock: new(big.Int).SetUint64(head),
			Topics: [][]common.Hash{{transferTopic}}})
		if err != nil {
			return []string{fmt.Sprintf("reading logs of %d: %v", n.ChainID(), err)}
		}
		times := map[uint64]time.Time{}
		for _, l := range logs {
			if len(l.Topics) != 3 {
				continue
			}
			bt, ok := times[l.BlockNumber]
			if !ok {
				h, err := n.Client().HeaderByNumber(ctx, new(big.Int).SetUint64(l.BlockNumber))
				if err != nil {
					return []string{fmt.Sprintf("reading header %d of %d: %v", l.BlockNumber, n.ChainID(), err)}
				}
				bt = time.Unix(int64(h.Time), 0)
				times[l.BlockNumber] = bt
			}
			all = append(all, onchainTransfer{transferKey: transferKey{n.ChainID(), l.BlockHash.Hex(), l.TxHash.Hex(), l.Index},
				block: l.BlockNumber, time: bt, token: strings.ToLower(l.Address.Hex()),
				from: strings.ToLower(common.BytesToAddress(l.Topics[1].Bytes()).Hex()), to: strings.ToLower(common.BytesToAddress(l.Topics[2].Bytes()).Hex()),
				amount: new(big.Int).SetBytes(l.Data), canonical: true})
		}
	}
	canonical := map[transferKey]onchainTransfer{}
	for _, x := range all {
		canonical[x.transferKey] = x
	}

	type sess struct {
		status    string
		expires   time.Time
		requested *big.Int
		wait      string
	}
	sessions := map[string]sess{}
	rows, err := s.db.PG.Query(ctx, `SELECT id, status, expires_at, dest_amount_raw::text, coalesce(settle_wait, '') FROM sessions`)
	if err != nil {
		return []string{err.Error()}
	}
	for rows.Next() {
		var id string
		var x sess
		var req *string
		if err := rows.Scan(&id, &x.status, &x.expires, &req, &x.wait); err != nil {
			return []string{err.Error()}
		}
		if req != nil {
			x.requested, _ = new(big.Int).SetString(*req, 10)
		}
		sessions[id] = x
	}
	rows.Close()
	receivers := map[string]string{}
	rows, err = s.db.PG.Query(ctx, `SELECT address, session_id FROM receivers`)
	if err != nil {
		return []string{err.Error()}
	}
	for rows.Next() {
		var a, id string
		if err := rows.Scan(&a, &id); err != nil {
			return []string{err.Error()}
		}
		receivers[a] = id
	}
	rows.Close()

	// 1 and 2: deposits against the chains.
	type dep struct {
		key      transferKey
		status   string
		credited bool
		reason   string
		session  string
		token    string
		amount   *big.Int
		time     time.Time
	}
	var deps []dep
	rows, err = s.db.PG.Query(ctx, `SELECT chain_id, block_hash, tx_hash, log_index, status::text, credited, coalesce(exception, ''), session_id, token, amount::text, block_time FROM deposits`)
	if err != nil {
		return []string{err.Error()}
	}
	for rows.Next() {
		var d dep
		var chainID int64
		var idx int32
		var amount string
		if err := rows.Scan(&chainID, &d.key.blockHash, &d.key.tx, &idx, &d.status, &d.credited, &d.reason, &d.session, &d.token, &amount, &d.time); err != nil {
			return []string{err.Error()}
		}
		d.key.chain, d.key.index = uint64(chainID), uint(idx)
		d.amount, _ = new(big.Int).SetString(amount, 10)
		deps = append(deps, d)
	}
	rows.Close()
	applied := map[transferKey]int{}
	credited := map[string]*big.Int{}
	for _, d := range deps {
		// Deposit rows store hashes as the indexer wrote them (lowercase).
		k := d.key
		x, onChain := canonicalLookup(canonical, k)
		switch {
		case d.status == "orphaned":
			if onChain {
				bad("deposit %s/%d on %d is orphaned but its block is canonical", k.tx, k.index, k.chain)
			}
			continue
		case !onChain:
			bad("deposit %s/%d on %d (session %s) is %s but its block %s is not canonical", k.tx, k.index, k.chain, d.session, d.status, k.blockHash)
			continue
		case d.status != "final":
			bad("deposit %s/%d on %d (session %s) is still %s with the chain quiet", k.tx, k.index, k.chain, d.session, d.status)
		}
		applied[x.transferKey]++
		se := sessions[d.session]
		if d.credited {
			if d.token != allow[k.chain] {
				bad("deposit %s/%d of token %s on %d credited to %s: not allowlisted there", k.tx, k.index, d.token, k.chain, d.session)
			}
			if !x.time.Before(se.expires) {
				bad("deposit %s/%d at %s credited to %s, whose deadline was %s", k.tx, k.index, x.time, d.session, se.expires)
			}
			if credited[d.session] == nil {
				credited[d.session] = new(big.Int)
			}
			credited[d.session].Add(credited[d.session], d.amount)
		} else if d.reason == "" {
			bad("deposit %s/%d neither credited nor an exception", k.tx, k.index)
		}
	}
	for _, x := range all {
		if _, ours := receivers[x.to]; !ours {
			continue
		}
		if n := applied[x.transferKey]; n != 1 {
			bad("transfer %s/%d of %s into receiver %s (session %s) on %d is applied %d times, want once", x.tx, x.index, x.amount, x.to, receivers[x.to], x.chain, n)
		}
	}

	// 3 and 4: payouts against the chains.
	type payout struct {
		session, kind, status string
		chain                 uint64
		token                 string
		txs                   map[string]bool
	}
	var payouts []payout
	rows, err = s.db.PG.Query(ctx, `SELECT session_id, kind, status, chain_id, token, coalesce(tx_hash, ''), prior_tx_hashes FROM payouts`)
	if err != nil {
		return []string{err.Error()}
	}
	for rows.Next() {
		var p payout
		var chainID int64
		var tx string
		var prior []string
		if err := rows.Scan(&p.session, &p.kind, &p.status, &chainID, &p.token, &tx, &prior); err != nil {
			return []string{err.Error()}
		}
		p.chain = uint64(chainID)
		p.txs = map[string]bool{strings.ToLower(tx): true}
		for _, h := range prior {
			p.txs[strings.ToLower(h)] = true
		}
		payouts = append(payouts, p)
	}
	rows.Close()
	paid := map[string]map[string]int{} // session → kind → transfers on chain
	outflow := map[string]*big.Int{}    // chain/token → treasury outflow on chain
	for _, x := range all {
		if x.from != treasury {
			continue
		}
		key := fmt.Sprintf("%d/%s", x.chain, x.token)
		if outflow[key] == nil {
			outflow[key] = new(big.Int)
		}
		outflow[key].Add(outflow[key], x.amount)
		found := false
		for _, p := range payouts {
			if p.chain == x.chain && p.txs[strings.ToLower(x.tx)] {
				found = true
				if paid[p.session] == nil {
					paid[p.session] = map[string]int{}
				}
				paid[p.session][p.kind]++
			}
		}
		if !found {
			bad("treasury transfer %s of %s on %d is no payout's", x.tx, x.amount, x.chain)
		}
	}
	for id, kinds := range paid {
		for kind, n := range kinds {
			if n > 1 {
				bad("session %s: %d %s transfers on chain, want at most one", id, n, kind)
			}
		}
		if kinds["delivery"] > 0 && kinds["refund"] > 0 {
			bad("session %s was both delivered and refunded", id)
		}
	}
	ledger := map[string]*big.Int{}
	type line struct {
		kind, reason string
		amount       *big.Int
	}
	lines := map[string][]line{}
	rows, err = s.db.PG.Query(ctx, `SELECT session_id, kind, reason, chain_id, token, amount::text FROM ledger_entries`)
	if err != nil {
		return []string{err.Error()}
	}
	for rows.Next() {
		var id, kind, reason, token, amount string
		var chainID int64
		if err := rows.Scan(&id, &kind, &reason, &chainID, &token, &amount); err != nil {
			return []string{err.Error()}
		}
		a, _ := new(big.Int).SetString(amount, 10)
		lines[id] = append(lines[id], line{kind, reason, a})
		if kind == "delivery" || kind == "refund" {
			key := fmt.Sprintf("%d/%s", chainID, strings.ToLower(token))
			if ledger[key] == nil {
				ledger[key] = new(big.Int)
			}
			ledger[key].Add(ledger[key], a)
		}
	}
	rows.Close()
	for key := range union(outflow, ledger) {
		on, led := orZero(outflow[key]), orZero(ledger[key])
		if on.Cmp(led) != 0 {
			bad("treasury outflow of %s is %s on chain but %s in the ledger", key, on, led)
		}
	}

	// 5: terminal statuses never change.
	for _, id := range ids {
		h := seen[id]
		for i := 0; i+1 < len(h); i++ {
			if terminal(h[i]) {
				bad("session %s read %s, later %s (API reads %v)", id, h[i], h[i+1], h)
				break
			}
		}
	}
	rows, err = s.db.PG.Query(ctx, `SELECT subject_id, topic FROM outbox ORDER BY id`)
	if err != nil {
		return []string{err.Error()}
	}
	ended := map[string]string{}
	for rows.Next() {
		var id, topic string
		if err := rows.Scan(&id, &topic); err != nil {
			return []string{err.Error()}
		}
		if !strings.HasPrefix(topic, "session.") {
			// deposit.exception and deposit.reorged report transfers,
			// which may arrive after the end (a late deposit).
			continue
		}
		if e, ok := ended[id]; ok {
			bad("session %s: outbox %s after %s", id, topic, e)
		}
		if st := strings.TrimPrefix(topic, "session."); terminal(st) {
			ended[id] = topic
		}
	}
	rows.Close()

	// 6 and 7: every session ended and balances.
	for _, id := range ids {
		se := sessions[id]
		switch se.status {
		case "processing":
			if se.wait != "manual_refund" {
				bad("session %s still processing %s after the chains went quiet (settle_wait %q)", id, quiet, se.wait)
			}
		case "requires_payment_method", "waiting_payment":
			if st := s.get(id)["status"]; st != "expired" {
				bad("session %s reads %v past its deadline with the chains quiet", id, st)
			}
		case "succeeded", "bounced":
			var delivered, refunded, surplus *big.Int = new(big.Int), new(big.Int), new(big.Int)
			for _, l := range lines[id] {
				switch {
				case l.kind == "delivery":
					delivered.Add(delivered, l.amount)
				case l.kind == "refund":
					refunded.Add(refunded, l.amount)
				case l.kind == "exception" && l.reason == "overpaid":
					surplus.Add(surplus, l.amount)
				}
			}
			in := orZero(credited[id])
			if in.Sign() == 0 {
				bad("session %s %s with no credited final deposit on the canonical chain", id, se.status)
			}
			if se.status == "succeeded" {
				want := in
				if se.requested != nil {
					want = se.requested
				}
				if delivered.Cmp(want) != 0 || new(big.Int).Add(delivered, surplus).Cmp(in) != 0 {
					bad("session %s succeeded: credited %s, delivered %s, overpaid %s (requested %v)", id, in, delivered, surplus, se.requested)
				}
			} else if refunded.Cmp(in) != 0 {
				bad("session %s bounced: credited %s, refunded %s", id, in, refunded)
			}
		}
	}
	return v
}

// canonicalLookup finds a deposit's transfer among the canonical ones; the
// database keeps lowercase hashes, go-ethereum prints them lowercase too,
// but compare without regard to case.
func canonicalLookup(c map[transferKey]onchainTransfer, k transferKey) (onchainTransfer, bool) {
	if x, ok := c[k]; ok {
		return x, true
	}
	for key, x := range c {
		if key.chain == k.chain && key.index == k.index && strings.EqualFold(key.tx, k.tx) && strings.EqualFold(key.blockHash, k.blockHash) {
			return x, true
		}
	}
	return onchainTransfer{}, false
}

func terminal(status string) bool {
	return status == "succeeded" || status == "bounced" || status == "expired"
}

func orZero(v *big.Int) *big.Int {
	if v == nil {
		return new(big.Int)
	}
	return v
}

func union(a, b map[string]*big.Int) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
