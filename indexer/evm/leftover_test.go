package evm_test

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

// An indexer killed between its ClickHouse insert and its cursor update
// leaves rows above the cursor. If the chain reorgs before it restarts,
// those rows belong to a dead fork that no reorg handling will ever see
// (tombstones cover only blocks the cursor passed): they must not stay
// live beside the canonical block at the same height, or the reconciler
// could credit a deposit that is not on chain.
func TestRowsAboveTheCursorFromACrashAreDropped(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	ctx := context.Background()
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Left", "LO", 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Mint(ctx, anvil.DevKeys[5], token, anvil.DevAddress(5), big.NewInt(1e12)); err != nil {
		t.Fatal(err)
	}
	h := start(t, node, db, node.URL(), nil)
	waitCursor(t, node, db, 60*time.Second)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	var cursor uint64
	if err := db.PG.QueryRow(ctx, `SELECT number FROM indexer_cursors WHERE chain_id = $1`, int64(node.ChainID())).Scan(&cursor); err != nil {
		t.Fatal(err)
	}
	// What the crashed session wrote for block cursor+1 of a fork that
	// then lost: a block and a transfer into one of our receivers.
	dead := "0x" + strings.Repeat("de", 32)
	bt := time.Now().Truncate(time.Second)
	b, err := db.CH.PrepareBatch(ctx, `INSERT INTO blocks (chain_id, number, hash, parent_hash, time, transfers, deleted, version)`)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(node.ChainID(), cursor+1, dead, "", bt, uint32(1), uint8(0), uint64(1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	tb, err := db.CH.PrepareBatch(ctx, `INSERT INTO transfers (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token,
		from_address, to_address, amount_raw, amount_overflow, deleted, version)`)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Append(node.ChainID(), cursor+1, dead, bt, "0x"+strings.Repeat("ab", 32), uint32(0), strings.ToLower(token.Hex()),
		strings.ToLower(anvil.DevAddress(5).Hex()), strings.ToLower(anvil.DevAddress(8).Hex()), "1000000", uint8(0), uint8(0), uint64(1)); err != nil {
		t.Fatal(err)
	}
	if err := tb.Send(); err != nil {
		t.Fatal(err)
	}
	// The canonical chain goes on at that height with other blocks.
	for range 3 {
		if _, err := node.Transfer(ctx, anvil.DevKeys[5], token, anvil.DevAddress(6), big.NewInt(7)); err != nil {
			t.Fatal(err)
		}
	}
	start(t, node, db, node.URL(), nil)
	waitCursor(t, node, db, 60*time.Second)
	var live uint64
	if err := db.CH.QueryRow(ctx, `SELECT count() FROM blocks FINAL WHERE chain_id = ? AND number = ? AND deleted = 0`, node.ChainID(), cursor+1).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 1 {
		t.Errorf("%d live blocks at height %d, want 1 (the canonical one)", live, cursor+1)
	}
	sameTransfers(t, chainTransfers(t, node), indexed(t, db, node.ChainID()))
}
