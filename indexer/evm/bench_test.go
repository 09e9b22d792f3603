package evm_test

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
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
// same run, on the same node, it runs the peer, Shovel (shared/peers/shovel,
// configured as its README says, into a fresh Postgres database), and
// reports both processes' rate, CPU seconds (utime + stime) and peak RSS
// (VmHWM of each process), with the ratios settle/Shovel. It
// also measures the ceiling: clickhouse-go inserting the same rows, same
// columns, in 100k-row batches. Figures are printed, never asserted.
//
//	make bench-indexer                      # 300k history, 5 runs
//	SETTLE_BENCH_BLOCKS=2000 make bench-indexer   # the 1.2M-log variant
//
// SETTLE_BENCH_SHOVEL names the Shovel binary (default
// ../shared/peers/shovel/shovel beside the repository; without one the
// comparison is left out). SETTLE_BENCH_BASELINE may name this package's
// test binary built from another commit (go test -c): it then runs as a
// third process in every run, so a change is compared with its parent on the
// same history, in the same run. SETTLE_BENCH_HOLD=DURATION only builds the
// history and keeps the node up that long (see oneshot_test.go).
// SETTLE_BENCH_CEILING=0 leaves the raw
// insert ceiling out. SETTLE_BENCH_CPUPROFILE=FILE writes the indexer
// child's CPU profile, SETTLE_BENCH_HEAPPROFILE=FILE its heap profile at
// its peak (each run overwrites it).
func BenchmarkBackfill(b *testing.B) {
	blocks, runs := envInt("SETTLE_BENCH_BLOCKS", 500), envInt("SETTLE_BENCH_RUNS", 5)
	if blocks%5 != 0 {
		b.Fatalf("SETTLE_BENCH_BLOCKS must be a multiple of 5")
	}
	node := anviltest.Start(b, anvil.Config{ChainID: 31337, NoMining: true, GasLimit: 100_000_000})
	ctx := context.Background()
	t0 := time.Now()
	token, _, err := node.BuildBenchHistory(ctx, blocks, 750)
	if err != nil {
		b.Fatal(err)
	}
	head, _ := node.Client().BlockNumber(ctx)
	h := benchHistory{head: head, token: token, logs: uint64(blocks/5*4*750 + 1)}
	h.sum = new(big.Int).Mul(big.NewInt(int64(blocks/5*4)), big.NewInt(750*751/2))
	h.sum.Add(h.sum, anvil.BenchSupply)
	b.Logf("history: %d blocks, %d transfers, built in %s", head, h.logs, time.Since(t0).Round(time.Millisecond))
	if hold, err := time.ParseDuration(os.Getenv("SETTLE_BENCH_HOLD")); err == nil {
		// For timing one-shot indexer processes from outside (oneshot_test.go).
		fmt.Fprintf(os.Stderr, "holding the node for %s: CHILD_RPC=%s CHILD_CHAIN=%d CHILD_UNTIL=%d\n", hold, node.URL(), node.ChainID(), head)
		time.Sleep(hold)
		return
	}

	shovel := shovelBinary(b)
	baseline := os.Getenv("SETTLE_BENCH_BASELINE")
	ceiling := os.Getenv("SETTLE_BENCH_CEILING") != "0"
	var settle, peer, base, ceilings []procResult
	b.ResetTimer()
	for range b.N {
		for run := range runs {
			// Alternate who goes first, so drift in the machine's speed
			// does not favour one side.
			steps := []func(){
				func() { settle = append(settle, backfillOnce(b, os.Args[0], node, h)) },
				func() {
					if shovel != "" {
						peer = append(peer, shovelOnce(b, shovel, node, h))
					}
				},
				func() {
					if baseline != "" {
						base = append(base, backfillOnce(b, baseline, node, h))
					}
				},
			}
			if run%2 == 1 {
				slices.Reverse(steps)
			}
			for _, step := range steps {
				step()
			}
			line := fmt.Sprintf("run %d: settle %s", run+1, settle[run])
			if shovel != "" {
				line += fmt.Sprintf(" | shovel %s", peer[run])
			}
			if baseline != "" {
				line += fmt.Sprintf(" | baseline %s", base[run])
			}
			if ceiling {
				ceilings = append(ceilings, procResult{rate: rawInsertRate(b, node, head)})
				line += fmt.Sprintf(" | raw insert %.0f rows/s", ceilings[run].rate)
			}
			b.Logf("%s", line)
		}
	}
	b.StopTimer()

	b.Logf("medians of %d runs (%d transfers each); ratios are medians of the per-run ratios", len(settle), h.logs)
	b.Logf("%-22s %12s %9s %13s %12s", "", "transfers/s", "CPU s", "µs/transfer", "peak RSS MB")
	row := func(name string, rs []procResult) {
		b.Logf("%-22s %12.0f %9.2f %13.2f %12.0f", name, median(rs, procResult.getRate), median(rs, procResult.getCPU),
			median(rs, procResult.getCPU)/float64(h.logs)*1e6, median(rs, procResult.getRSS))
	}
	ratios := func(name string, a, c []procResult) (rate, cpu, rss float64) {
		rate, cpu, rss = medianRatio(a, c, procResult.getRate), medianRatio(a, c, procResult.getCPU), medianRatio(a, c, procResult.getRSS)
		b.Logf("%-22s %11.2f× %8.2f× %13s %11.2f×", name, rate, cpu, "", rss)
		return rate, cpu, rss
	}
	row("settle", settle)
	if shovel != "" {
		row("shovel", peer)
	}
	if baseline != "" {
		row("baseline", base)
	}
	if shovel != "" {
		rate, _, rss := ratios("settle / shovel", settle, peer)
		b.ReportMetric(rate, "rate-vs-shovel")
		b.ReportMetric(rss, "rss-vs-shovel")
		b.ReportMetric(median(peer, procResult.getRate), "shovel-transfers/s")
		b.ReportMetric(median(peer, procResult.getRSS), "shovel-peak-MB")
	}
	if baseline != "" {
		ratios("settle / baseline", settle, base)
	}
	if ceiling {
		b.Logf("%-22s %12.0f rows/s (median); settle / ceiling %.2f", "raw clickhouse insert", median(ceilings, procResult.getRate),
			medianRatio(settle, ceilings, procResult.getRate))
		b.ReportMetric(median(ceilings, procResult.getRate), "insert-rows/s")
	}
	b.ReportMetric(median(settle, procResult.getRate), "transfers/s")
	b.ReportMetric(median(settle, procResult.getCPU), "cpu-s")
	b.ReportMetric(median(settle, procResult.getRSS), "peak-MB")
}

// benchHistory is what a run must find indexed.
type benchHistory struct {
	head  uint64
	token common.Address
	logs  uint64
	sum   *big.Int // every Transfer value, the mint included
}

// procResult is one indexer process's run: its rate from spawn to the last
// row, and the kernel's accounting of the process alone.
type procResult struct {
	rate float64 // transfers/s
	cpu  float64 // utime + stime, seconds
	rss  float64 // peak resident set, MB
}

func (r procResult) getRate() float64 { return r.rate }
func (r procResult) getCPU() float64  { return r.cpu }
func (r procResult) getRSS() float64  { return r.rss }

func (r procResult) String() string {
	return fmt.Sprintf("%.0f transfers/s, %.2f CPU s, %.0f MB", r.rate, r.cpu, r.rss)
}

// stop ends a process that has done its work and fills in its figures:
// CPU from the kernel's rusage of the reaped process, peak RSS from its
// VmHWM, read just before the signal. (rusage's maxrss would not do: Go
// starts children with CLONE_VM, and Linux carries the high-water mark of
// the memory a process execs from into its maxrss, so every child would
// report at least this benchmark's own peak.)
func (r *procResult) stop(cmd *exec.Cmd) {
	r.rss = peakRSS(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
}

// peakRSS returns a live process's peak resident set in MB.
func peakRSS(pid int) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func median(rs []procResult, f func(procResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// medianRatio is the median of a[i]/c[i]: pairs measured in the same run
// share the machine's state of the moment.
func medianRatio(a, c []procResult, f func(procResult) float64) float64 {
	v := make([]procResult, len(a))
	for i := range a {
		v[i].rate = f(a[i]) / f(c[i])
	}
	return median(v, procResult.getRate)
}

// backfillOnce runs one indexer process (bin is this test binary, or a
// baseline build of it) to the head on fresh databases, verifies what it
// wrote and returns its figures.
func backfillOnce(b *testing.B, bin string, node *anvil.Node, h benchHistory) procResult {
	ctx := context.Background()
	db := dbtest.Migrated(b)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_PG="+db.PostgresURL, "CHILD_CH="+db.ClickHouseURL,
		"CHILD_RPC="+node.URL(), "CHILD_CHAIN="+strconv.FormatUint(node.ChainID(), 10), "CHILD_BENCH=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	for {
		var n int64
		if err := db.PG.QueryRow(ctx, `SELECT number FROM indexer_cursors`).Scan(&n); err == nil && uint64(n) == h.head {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("backfill did not finish in 10 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res := procResult{rate: float64(h.logs) / time.Since(start).Seconds()}
	res.stop(cmd)
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
	if count != h.logs || distinct != h.logs || m.Cmp(anvil.BenchSupply) != 0 || new(big.Int).Add(got, m).Cmp(h.sum) != 0 {
		b.Fatalf("verification failed: %d rows, %d distinct, sum %s + mint %s, want %d rows and total %s", count, distinct, sum, mint, h.logs, h.sum)
	}
	return res
}

// shovelBinary finds the peer's binary, or returns "" (and says so) to leave
// the comparison out.
func shovelBinary(b *testing.B) string {
	path := os.Getenv("SETTLE_BENCH_SHOVEL")
	if path == "" {
		path = filepath.Join("..", "..", "..", "shared", "peers", "shovel", "shovel")
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		if fi, err := os.Stat(abs); err == nil && fi.Mode().IsRegular() {
			return abs
		}
	}
	b.Logf("no Shovel binary at %s: the peer comparison is left out (set SETTLE_BENCH_SHOVEL)", path)
	return ""
}

// shovelConfig is the peer's tuned configuration from its README
// (shared/peers/shovel/README.md): batch_size 100, concurrency 4, and the
// log_addr filter that makes it fastest on this history.
const shovelConfig = `{"pg_url": %q,
 "eth_sources": [{"name": "anvil", "chain_id": %d, "url": %q, "batch_size": 100, "concurrency": 4}],
 "integrations": [{"name": "erc20_transfers", "enabled": true,
  "sources": [{"name": "anvil", "start": 1}],
  "table": {"name": "erc20_transfers", "columns": [
   {"name": "block_num", "type": "numeric"}, {"name": "tx_hash", "type": "bytea"},
   {"name": "log_idx", "type": "int"}, {"name": "log_addr", "type": "bytea"},
   {"name": "from_addr", "type": "bytea"}, {"name": "to_addr", "type": "bytea"},
   {"name": "value", "type": "numeric"}]},
  "block": [{"name": "block_num", "column": "block_num"}, {"name": "tx_hash", "column": "tx_hash"},
   {"name": "log_idx", "column": "log_idx"},
   {"name": "log_addr", "column": "log_addr", "filter_op": "contains", "filter_arg": [%q]}],
  "event": {"name": "Transfer", "type": "event", "anonymous": false, "inputs": [
   {"indexed": true, "name": "from", "type": "address", "column": "from_addr"},
   {"indexed": true, "name": "to", "type": "address", "column": "to_addr"},
   {"indexed": false, "name": "value", "type": "uint256", "column": "value"}]}}]}`

// shovelOnce runs Shovel from block 1 to the head into a fresh Postgres
// database, timed like backfillOnce: from spawn until its progress row
// (written in the same transaction as the rows) reaches the head. Then it
// checks the rows.
func shovelOnce(b *testing.B, bin string, node *anvil.Node, h benchHistory) procResult {
	ctx := context.Background()
	pgURL := dbtest.PostgresURL(b)
	pg := dbtest.OpenPostgres(b, pgURL)
	dir := b.TempDir()
	conf := filepath.Join(dir, "shovel.json")
	token := strings.TrimPrefix(strings.ToLower(h.token.Hex()), "0x")
	if err := os.WriteFile(conf, fmt.Appendf(nil, shovelConfig, pgURL, node.ChainID(), node.URL(), token), 0o600); err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	logf, err := os.Create(filepath.Join(dir, "shovel.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-config", conf, "-l", addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	for {
		var n *int64
		if err := pg.QueryRow(ctx, `SELECT max(num) FROM shovel.task_updates`).Scan(&n); err == nil && n != nil && uint64(*n) == h.head {
			break
		}
		if time.Since(start) > 10*time.Minute {
			out, _ := os.ReadFile(logf.Name())
			b.Fatalf("shovel did not finish in 10 minutes; its log:\n%s", out[max(0, len(out)-4000):])
		}
		time.Sleep(10 * time.Millisecond)
	}
	res := procResult{rate: float64(h.logs) / time.Since(start).Seconds()}
	res.stop(cmd)
	var count, distinct int64
	var sum string
	err = pg.QueryRow(ctx, `SELECT count(*), count(DISTINCT (block_num, tx_idx, log_idx)), sum(value)::text FROM erc20_transfers`).Scan(&count, &distinct, &sum)
	if err != nil {
		b.Fatal(err)
	}
	if got, _ := new(big.Int).SetString(sum, 10); uint64(count) != h.logs || uint64(distinct) != h.logs || got == nil || got.Cmp(h.sum) != 0 {
		b.Fatalf("shovel verification failed: %d rows, %d distinct, sum %s, want %d rows and sum %s", count, distinct, sum, h.logs, h.sum)
	}
	return res
}

// rawInsertRate reads the history with the evm source (untimed) and times
// clickhouse-go inserting the same rows into the transfers table of a fresh
// database, 100k rows per batch, columns appended whole.
func rawInsertRate(b *testing.B, node *anvil.Node, head uint64) float64 {
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
