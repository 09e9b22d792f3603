package evm_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkBackfill measures the indexer on the peer baseline's history
// (shared/notes/peer-baseline.md): BenchToken, 500 blocks, 750 Transfer logs
// in 4 of every 5 blocks, 300,001 logs. Each run starts a fresh indexer
// process on fresh databases, times it from spawn until the cursor reaches
// the head, then verifies every row in FINAL (count and checksum). In the
// same run it measures the ceiling: clickhouse-go inserting the same rows,
// same columns, in 100k-row batches. Figures are printed, never asserted.
//
//	make bench-indexer                      # 300k history, 5 runs
//	SETTLE_BENCH_BLOCKS=2000 make bench-indexer   # the 1.2M-log variant
func BenchmarkBackfill(b *testing.B) {
	blocks, runs := envInt("SETTLE_BENCH_BLOCKS", 500), envInt("SETTLE_BENCH_RUNS", 5)
	node := anviltest.Start(b, anvil.Config{ChainID: 31337, NoMining: true, GasLimit: 100_000_000})
	ctx := context.Background()
	t0 := time.Now()
	if _, _, err := node.BuildBenchHistory(ctx, blocks, 750); err != nil {
		b.Fatal(err)
	}
	head, _ := node.Client().BlockNumber(ctx)
	wantLogs := uint64(blocks/5*4*750 + 1)
	if blocks%5 != 0 {
		b.Fatalf("SETTLE_BENCH_BLOCKS must be a multiple of 5")
	}
	wantSum := new(big.Int).Mul(big.NewInt(int64(blocks/5*4)), big.NewInt(750*751/2))
	wantSum.Add(wantSum, anvil.BenchSupply)
	b.Logf("history: %d blocks, %d transfers, built in %s", head, wantLogs, time.Since(t0).Round(time.Millisecond))

	var rates, ceilings, rss []float64
	b.ResetTimer()
	for range b.N {
		for run := range runs {
			db := dbtest.Migrated(b)
			rate, hwm := backfillOnce(b, node, db, head, wantLogs, wantSum)
			ceiling := rawInsertRate(b, node, db.CH, head)
			b.Logf("run %d: indexer %.0f transfers/s, raw insert %.0f rows/s, ratio %.2f, peak RSS %.0f MB", run+1, rate, ceiling, rate/ceiling, hwm)
			rates, ceilings, rss = append(rates, rate), append(ceilings, ceiling), append(rss, hwm)
		}
	}
	b.StopTimer()
	report := func(name string, v []float64, unit string) {
		s := slices.Clone(v)
		slices.Sort(s)
		b.Logf("%-22s min %10.0f  median %10.0f  max %10.0f  %s", name, s[0], s[len(s)/2], s[len(s)-1], unit)
		b.ReportMetric(s[len(s)/2], unit)
	}
	report("indexer end-to-end", rates, "transfers/s")
	report("raw clickhouse insert", ceilings, "insert-rows/s")
	report("indexer peak RSS", rss, "peak-MB")
	ratios := make([]float64, len(rates))
	for i := range rates {
		ratios[i] = rates[i] / ceilings[i]
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio-to-insert-ceiling")
}

// backfillOnce runs one indexer process to the head and returns its rate
// and peak RSS in MB.
func backfillOnce(b *testing.B, node *anvil.Node, db dbtest.DBs, head, wantLogs uint64, wantSum *big.Int) (float64, float64) {
	ctx := context.Background()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_PG="+db.PostgresURL, "CHILD_CH="+db.ClickHouseURL,
		"CHILD_RPC="+node.URL(), "CHILD_CHAIN="+strconv.FormatUint(node.ChainID(), 10), "CHILD_BENCH=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		var n int64
		if err := db.PG.QueryRow(ctx, `SELECT number FROM indexer_cursors`).Scan(&n); err == nil && uint64(n) == head {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("backfill did not finish in 10 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	hwm := peakRSS(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	var count, distinct uint64
	var sum string
	err := db.CH.QueryRow(ctx, `SELECT count(), uniqExact(tx_hash, log_index), toString(sumIf(toUInt64(amount_raw), from_address != '0x0000000000000000000000000000000000000000')) FROM transfers FINAL WHERE deleted = 0`).Scan(&count, &distinct, &sum)
	if err != nil {
		b.Fatal(err)
	}
	// The mint (10^27) does not fit a UInt64: check it apart.
	var mint string
	if err := db.CH.QueryRow(ctx, `SELECT amount_raw FROM transfers FINAL WHERE from_address = '0x0000000000000000000000000000000000000000'`).Scan(&mint); err != nil {
		b.Fatal(err)
	}
	got, _ := new(big.Int).SetString(sum, 10)
	m, _ := new(big.Int).SetString(mint, 10)
	if count != wantLogs || distinct != wantLogs || m.Cmp(anvil.BenchSupply) != 0 || new(big.Int).Add(got, m).Cmp(wantSum) != 0 {
		b.Fatalf("verification failed: %d rows, %d distinct, sum %s + mint %s, want %d rows and total %s", count, distinct, sum, mint, wantLogs, wantSum)
	}
	return float64(wantLogs) / elapsed.Seconds(), hwm
}

func peakRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// rawInsertRate reads the history with the evm source (untimed) and times
// clickhouse-go inserting the same rows into the transfers table of a fresh
// database, 100k rows per batch, columns appended whole.
func rawInsertRate(b *testing.B, node *anvil.Node, _ driver.Conn, head uint64) float64 {
	ctx := context.Background()
	src, err := evm.New(ctx, evm.Config{URL: node.URL(), ChainName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	// The node's own ceiling: the same eth_getLogs calls, bodies read and
	// discarded.
	rpcStart := time.Now()
	var rg0 errgroup.Group
	rg0.SetLimit(3)
	for from := uint64(0); from <= head; from += 20 {
		rg0.Go(func() error {
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"%#x","toBlock":"%#x","topics":["%s"]}]}`, from, min(from+19, head), evm.TransferTopic)
			resp, err := http.Post(node.URL(), "application/json", strings.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(io.Discard, resp.Body)
			return err
		})
	}
	if err := rg0.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("  node ceiling (eth_getLogs, 3 streams of 20 blocks, bodies discarded): %.0f logs/s", float64(head/5*4*750)/time.Since(rpcStart).Seconds())

	// The source ceiling: the same ranges and parallelism as the indexer's
	// defaults (20 blocks, 3 in flight), fetched and decoded, not stored.
	fetchStart := time.Now()
	parts := make([][]indexer.Transfer, (head+20)/20)
	var g errgroup.Group
	g.SetLimit(3)
	for i := range parts {
		from := uint64(i) * 20
		g.Go(func() error {
			r, err := src.Fetch(ctx, from, min(from+19, head))
			if err == nil {
				parts[i] = r.Transfers
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	rg := &indexer.Range{}
	for _, p := range parts {
		rg.Transfers = append(rg.Transfers, p...)
	}
	b.Logf("  source ceiling (fetch and decode only, 3 streams of 20 blocks): %.0f transfers/s",
		float64(len(rg.Transfers))/time.Since(fetchStart).Seconds())
	ch := dbtest.Migrated(b).CH
	start := time.Now()
	for lo := 0; lo < len(rg.Transfers); lo += 100_000 {
		ts := rg.Transfers[lo:min(lo+100_000, len(rg.Transfers))]
		batch, err := ch.PrepareBatch(ctx, `INSERT INTO transfers (chain_id, block_number, block_hash, block_time, tx_hash, log_index,
			token, from_address, to_address, amount_raw, amount_overflow, deleted, version)`)
		if err != nil {
			b.Fatal(err)
		}
		n := len(ts)
		cols := []any{make([]uint64, n), make([]uint64, n), make([]string, n), make([]int64, n), make([]string, n), make([]uint32, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]uint8, n), make([]uint8, n), make([]uint64, n)}
		for i, t := range ts {
			cols[0].([]uint64)[i], cols[1].([]uint64)[i], cols[2].([]string)[i] = 31337, t.BlockNumber, t.BlockHash
			cols[3].([]int64)[i], cols[4].([]string)[i], cols[5].([]uint32)[i] = int64(t.BlockTime), t.TxHash, t.LogIndex
			cols[6].([]string)[i], cols[7].([]string)[i], cols[8].([]string)[i], cols[9].([]string)[i] = t.Token, t.From, t.To, t.Amount
			cols[12].([]uint64)[i] = 1
		}
		for i, c := range cols {
			if err := batch.Column(i).Append(c); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(len(rg.Transfers)) / time.Since(start).Seconds()
}
