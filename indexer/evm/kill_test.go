package evm_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

// childEnv makes the test binary run an indexer instead of the tests, so
// TestKilledIndexerLosesNothing can SIGKILL a real process.
const childEnv = "SETTLE_TEST_INDEXER_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child indexer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pgURL, chURL := os.Getenv("CHILD_PG"), os.Getenv("CHILD_CH")
	if os.Getenv("CHILD_FRESH") == "1" {
		var drop func()
		var err error
		if pgURL, chURL, drop, err = freshDatabases(ctx); err != nil {
			return err
		}
		defer drop()
	}
	pg, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAtBlock(ctx, pg, cancel)
	opts, err := clickhouse.ParseDSN(chURL)
	if err != nil {
		return err
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		return err
	}
	defer ch.Close()
	src, err := evm.New(ctx, evm.Config{URL: os.Getenv("CHILD_RPC"), ChainName: "child"})
	if err != nil {
		return err
	}
	chainID, _ := strconv.ParseUint(os.Getenv("CHILD_CHAIN"), 10, 64)
	cfg := indexer.Config{
		ChainID: chainID, ChainName: "child", Source: src, Postgres: pg, ClickHouse: ch,
		RangeBlocks: 2, Workers: 2, BatchRows: 1500, FlushInterval: 20 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	}
	if os.Getenv("CHILD_BENCH") == "1" {
		// Production settings, tunable for exploration.
		cfg.RangeBlocks = uint64(envInt("SETTLE_BENCH_RANGE", 0))
		cfg.Workers = envInt("SETTLE_BENCH_WORKERS", 0)
		cfg.BatchRows = envInt("SETTLE_BENCH_BATCH_ROWS", 0)
		cfg.FlushInterval, cfg.PollInterval = 0, 10*time.Millisecond
	}
	if path := os.Getenv("SETTLE_BENCH_CPUPROFILE"); path != "" && os.Getenv("CHILD_BENCH") == "1" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("SETTLE_BENCH_HEAPPROFILE"); path != "" && os.Getenv("CHILD_BENCH") == "1" {
		done := make(chan struct{})
		defer func() { close(done) }()
		go heapAtPeak(path, done)
	}
	r, err := indexer.New(cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// heapAtPeak samples the heap every 5ms and writes a heap profile (as of
// the last GC) whenever the live-object bytes reach a new high, then prints
// the peak, to see what a backfill holds at its worst.
func heapAtPeak(path string, done <-chan struct{}) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	var peak, goal uint64
	for {
		select {
		case <-done:
			fmt.Fprintf(os.Stderr, "child heap: peak objects %.1f MB, peak goal %.1f MB, %d GCs\n", float64(peak)/1e6, float64(goal)/1e6, samples[2].Value.Uint64())
			return
		case <-time.After(5 * time.Millisecond):
		}
		metrics.Read(samples)
		goal = max(goal, samples[1].Value.Uint64())
		if v := samples[0].Value.Uint64(); v > peak+peak/20 {
			peak = v
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				_ = f.Close()
			}
		}
	}
}

func TestKilledIndexerLosesNothing(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337, NoMining: true})
	db := dbtest.Migrated(t)
	ctx := context.Background()
	if _, _, err := node.BuildBenchHistory(ctx, 120, 300); err != nil {
		t.Fatal(err)
	}
	head, err := node.Client().BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spawn := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_PG="+db.PostgresURL, "CHILD_CH="+db.ClickHouseURL,
			"CHILD_RPC="+node.URL(), "CHILD_CHAIN="+strconv.FormatUint(node.ChainID(), 10))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cursor := func() int64 {
		var n int64 = -1
		_ = db.PG.QueryRow(ctx, `SELECT number FROM indexer_cursors`).Scan(&n)
		return n
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var killedMidway int
	for i := 0; i < 12 && cursor() < int64(head); i++ {
		cmd := spawn()
		time.Sleep(time.Duration(60+rng.IntN(250)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if c := cursor(); c < int64(head) {
			killedMidway++
			t.Logf("kill %d: cursor at %d of %d", i, c, head)
		}
	}
	if killedMidway < 4 {
		t.Fatalf("only %d kills landed before the backfill finished; the test did not exercise restarts", killedMidway)
	}
	cmd := spawn()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	waitCursor(t, node, db, 120*time.Second)
	sameTransfers(t, chainTransfers(t, node), indexed(t, db, node.ChainID()))
}
