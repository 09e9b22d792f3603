package evm_test

import (
	"context"
	"errors"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	dto "github.com/prometheus/client_model/go"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

func transferData(to common.Address, amount *big.Int) []byte {
	data := common.FromHex("0xa9059cbb")
	data = append(data, common.LeftPadBytes(to.Bytes(), 32)...)
	return append(data, common.LeftPadBytes(amount.Bytes(), 32)...)
}

func counterValue(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += metricValue(m)
			}
			return sum
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func TestReorgsLeaveOnlyTheNewBranch(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	randomActivity(t, node, rng, 30)
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Reorg", "RG", 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Mint(ctx, anvil.DevKeys[5], token, anvil.DevAddress(5), big.NewInt(1e12)); err != nil {
		t.Fatal(err)
	}
	for range 8 { // blocks with transfers that the reorgs will orphan
		if _, err := node.Transfer(ctx, anvil.DevKeys[5], token, anvil.DevAddress(6), big.NewInt(rng.Int64N(1e6)+1)); err != nil {
			t.Fatal(err)
		}
	}
	h := start(t, node, db, node.URL(), nil)
	waitCursor(t, node, db, 60*time.Second)
	sameTransfers(t, chainTransfers(t, node), indexed(t, db, node.ChainID()))

	for _, tc := range []struct {
		depth int
		txs   []anvil.ReorgTx
	}{
		{1, []anvil.ReorgTx{{Key: anvil.DevKeys[5], To: &token, Data: transferData(anvil.DevAddress(7), big.NewInt(111)), Block: 0}}},
		{5, []anvil.ReorgTx{
			{Key: anvil.DevKeys[5], To: &token, Data: transferData(anvil.DevAddress(8), big.NewInt(222)), Block: 1},
			{Key: anvil.DevKeys[5], To: &token, Data: transferData(anvil.DevAddress(9), big.NewInt(333)), Block: 3},
		}},
	} {
		oldHead := hashAt(t, node, -1)
		headNum, err := node.Client().BlockNumber(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantFork := headNum - uint64(tc.depth) + 1
		before := chainTransfers(t, node)
		if _, err := node.ReorgWith(ctx, tc.depth, tc.txs); err != nil {
			t.Fatal(err)
		}
		if hashAt(t, node, -1) == oldHead {
			t.Fatalf("anvil_reorg(%d) did not change the head", tc.depth)
		}
		after := chainTransfers(t, node)
		waitCursor(t, node, db, 60*time.Second)
		got := indexed(t, db, node.ChainID())
		sameTransfers(t, after, got)
		// The orphaned branch's transfers are gone from FINAL results.
		live := map[string]bool{}
		for _, g := range got {
			live[g.key()] = true
		}
		orphaned := 0
		for _, b := range before {
			if !live[b.key()] {
				orphaned++
			}
		}
		if orphaned == 0 {
			t.Errorf("depth %d: no transfer was orphaned; the test did not exercise the reorg", tc.depth)
		}
		var records uint64
		err = db.CH.QueryRow(ctx, `SELECT count() FROM reorgs FINAL WHERE chain_id = ? AND fork_number = ? AND depth = ? AND old_hash != new_hash AND new_hash != ''`,
			node.ChainID(), wantFork, uint32(tc.depth)).Scan(&records)
		if err != nil || records != 1 {
			t.Errorf("reorg records with fork %d and depth %d: %d, %v; want 1", wantFork, tc.depth, records, err)
		}
	}
	if got := counterValue(t, h, "settle_indexer_reorgs_total"); got != 2 {
		t.Errorf("settle_indexer_reorgs_total = %v, want 2", got)
	}
	var tombstones uint64
	if err := db.CH.QueryRow(ctx, `SELECT count() FROM transfers FINAL WHERE deleted = 1`).Scan(&tombstones); err != nil || tombstones == 0 {
		t.Errorf("tombstones: %d, %v", tombstones, err)
	}
	// Every live block is the node's block at that height.
	rows, err := db.CH.Query(ctx, `SELECT number, hash FROM blocks FINAL WHERE chain_id = ? AND deleted = 0 ORDER BY number`, node.ChainID())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n uint64
		var hash string
		if err := rows.Scan(&n, &hash); err != nil {
			t.Fatal(err)
		}
		if want := hashAt(t, node, int64(n)); hash != want {
			t.Errorf("block %d: indexed %s, chain %s", n, hash, want)
		}
	}
}

func TestReorgDeeperThanMaximumStops(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	ctx := context.Background()
	if err := node.Mine(ctx, 10); err != nil {
		t.Fatal(err)
	}
	h := start(t, node, db, node.URL(), func(c *indexer.Config) { c.MaxReorgDepth = 3 })
	waitCursor(t, node, db, 30*time.Second)
	var before int64
	if err := db.PG.QueryRow(ctx, `SELECT number FROM indexer_cursors`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if err := node.Reorg(ctx, 5); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.done:
		h.done <- err
		if !errors.Is(err, indexer.ErrReorgTooDeep) {
			t.Fatalf("Run = %v, want ErrReorgTooDeep", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("indexer kept running after a reorg deeper than its maximum")
	}
	var after int64
	var hash string
	if err := db.PG.QueryRow(ctx, `SELECT number, hash FROM indexer_cursors`).Scan(&after, &hash); err != nil || after != before {
		t.Errorf("cursor moved from %d to %d (%v): history was rewritten", before, after, err)
	}
	if hash == strings.ToLower(hashAt(t, node, after)) {
		t.Error("cursor hash matches the new chain; the reorg was not deep enough to test")
	}
}
