package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/delivery"
	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/reconciler"
)

// childEnv makes the test binary run a reconciler or a payout executor, so
// TestKilledProcessesPayOnce can SIGKILL real processes.
const childEnv = "SETTLE_E2E_CHILD"

type childConfig struct {
	Role          string // reconciler, delivery or indexer
	PG, CH        string
	RPC           map[uint64]string
	USDC          map[uint64]string
	Executors     map[uint64]common.Address
	FinalityDepth uint64
	// Chain and URL: the chain an indexer indexes, through URL.
	Chain uint64
	URL   string
}

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		var c childConfig
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := runChild(c); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(c childConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pg, err := pgxpool.New(ctx, c.PG)
	if err != nil {
		return err
	}
	defer pg.Close()
	master, err := hdwallet.MasterFromSeed(bytes.Repeat([]byte{42}, 32))
	if err != nil {
		return err
	}
	treasury, err := master.TreasuryKey()
	if err != nil {
		return err
	}
	switch c.Role {
	case "reconciler":
		ch, err := openClickHouse(c.CH)
		if err != nil {
			return err
		}
		defer ch.Close()
		var chains []chain.Chain
		for id, tok := range c.USDC {
			chains = append(chains, chain.Chain{ID: id, Name: fmt.Sprint(id), Family: chain.FamilyEVM, Indexed: true,
				Tokens: []chain.Token{{Symbol: "USDC", Address: tok, Decimals: 6}}})
		}
		reg, err := chain.NewRegistry(chains)
		if err != nil {
			return err
		}
		opt := map[uint64]reconciler.ChainOptions{}
		for id := range c.USDC {
			opt[id] = reconciler.ChainOptions{FinalityDepth: c.FinalityDepth}
		}
		r, err := reconciler.New(reconciler.Config{Chains: reg, Options: opt, Postgres: pg, ClickHouse: ch,
			Treasury: crypto.PubkeyToAddress(treasury.PublicKey).Hex(), Interval: 20 * time.Millisecond})
		if err != nil {
			return err
		}
		return r.Run(ctx)
	case "indexer":
		ch, err := openClickHouse(c.CH)
		if err != nil {
			return err
		}
		defer ch.Close()
		src, err := evm.New(ctx, evm.Config{URL: c.URL, ChainName: fmt.Sprint(c.Chain)})
		if err != nil {
			return err
		}
		r, err := indexer.New(indexer.Config{ChainID: c.Chain, ChainName: fmt.Sprint(c.Chain), Source: src, Postgres: pg, ClickHouse: ch,
			PollInterval: 50 * time.Millisecond, FlushInterval: 50 * time.Millisecond})
		if err != nil {
			return err
		}
		return r.Run(ctx)
	case "delivery":
		clients := map[uint64]delivery.ChainClient{}
		fin := map[uint64]delivery.Finality{}
		for id, url := range c.RPC {
			cl, err := ethclient.Dial(url)
			if err != nil {
				return err
			}
			clients[id] = cl
			fin[id] = delivery.Finality{Depth: c.FinalityDepth}
		}
		ex, err := delivery.New(delivery.Config{Postgres: pg, Chains: clients, Finality: fin, Executors: c.Executors, Treasury: treasury,
			Interval: 20 * time.Millisecond, RebroadcastAfter: time.Second, WatchEvery: 200 * time.Millisecond})
		if err != nil {
			return err
		}
		return ex.Run(ctx)
	}
	return fmt.Errorf("unknown role %q", c.Role)
}

func openClickHouse(dsn string) (driver.Conn, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return clickhouse.Open(opts)
}

// (g) The reconciler and the delivery process killed with SIGKILL at random
// points and restarted: every deposit applied once, exactly one delivery
// transaction per session, nothing lost.
func TestKilledProcessesPayOnce(t *testing.T) {
	s := newStack(t, options{external: true})
	cfg := childConfig{PG: s.db.PostgresURL, CH: s.db.ClickHouseURL, FinalityDepth: 3,
		RPC:  map[uint64]string{chainA: s.a.URL(), chainB: s.b.URL()},
		USDC: map[uint64]string{chainA: s.usdcA.Hex(), chainB: s.usdcB.Hex()}, Executors: s.executors}
	spawn := func(role string) *exec.Cmd {
		c := cfg
		c.Role = role
		j, _ := json.Marshal(c)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+string(j))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	const n = 12
	dest := anvil.DevAddress(7)
	var ids []string
	for range n {
		id, _, recv := s.session(evmDest(chainB, s.usdcB, dest, "1"), nil)
		ids = append(ids, id)
		s.pay(s.a, s.usdcA, recv, 1_000_000)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	deadline := time.Now().Add(3 * time.Minute)
	kills := 0
	for time.Now().Before(deadline) {
		rec, del := spawn("reconciler"), spawn("delivery")
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		_ = rec.Process.Signal(syscall.SIGKILL)
		_ = del.Process.Signal(syscall.SIGKILL)
		_ = rec.Wait()
		_ = del.Wait()
		kills++
		if s.allStatus(ids, "succeeded") {
			break
		}
	}
	// Let a final pair finish whatever is left.
	rec, del := spawn("reconciler"), spawn("delivery")
	defer func() {
		for _, c := range []*exec.Cmd{rec, del} {
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
		}
	}()
	for _, id := range ids {
		s.waitStatus(id, "succeeded", 2*time.Minute)
	}
	t.Logf("%d SIGKILL rounds", kills)
	if kills < 4 {
		t.Errorf("only %d kill rounds happened before every session succeeded; the test did not exercise restarts", kills)
	}
	ctx := context.Background()
	var deposits, payouts, txs int
	if err := s.db.PG.QueryRow(ctx, `SELECT count(*) FROM deposits`).Scan(&deposits); err != nil || deposits != n {
		t.Errorf("deposits = %d (%v), want %d", deposits, err, n)
	}
	if err := s.db.PG.QueryRow(ctx, `SELECT count(*), count(DISTINCT tx_hash) FROM payouts WHERE kind = 'delivery'`).Scan(&payouts, &txs); err != nil || payouts != n || txs != n {
		t.Errorf("deliveries = %d with %d distinct txs (%v), want %d", payouts, txs, err, n)
	}
	// On chain: exactly n transfers from the treasury, one per session.
	treasury := strings.ToLower(crypto.PubkeyToAddress(s.treasury.PublicKey).Hex())
	var onchain uint64
	if err := s.db.CH.QueryRow(ctx, `SELECT count() FROM transfers FINAL WHERE chain_id = ? AND from_address = ? AND deleted = 0`, uint64(chainB), treasury).Scan(&onchain); err != nil || onchain != n {
		t.Errorf("treasury transfers on chain B = %d (%v), want %d", onchain, err, n)
	}
	if got := s.balance(s.b, s.usdcB, dest).Int64(); got != n*1_000_000 {
		t.Errorf("destination holds %d, want %d", got, n*1_000_000)
	}
}

func (s *stack) allStatus(ids []string, want string) bool {
	for _, id := range ids {
		if s.get(id)["status"] != want {
			return false
		}
	}
	return true
}
