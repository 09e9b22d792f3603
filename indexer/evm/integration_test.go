package evm_test

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/indexer/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

type chainTransfer struct {
	BlockNumber uint64
	BlockHash   string
	TxHash      string
	LogIndex    uint32
	Token       string
	From, To    string
	Amount      string
}

func (c chainTransfer) key() string { return fmt.Sprintf("%s/%d", c.TxHash, c.LogIndex) }

// chainTransfers reads the ERC-20 transfers the node has now, decoded with
// go-ethereum's own types: the reference the indexer is compared with.
func chainTransfers(t *testing.T, n *anvil.Node) []chainTransfer {
	t.Helper()
	logs, err := n.Client().FilterLogs(context.Background(), ethereum.FilterQuery{
		FromBlock: big.NewInt(0),
		Topics:    [][]common.Hash{{anvil.TransferTopic}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []chainTransfer
	for _, l := range logs {
		if len(l.Topics) != 3 || len(l.Data) != 32 {
			continue
		}
		out = append(out, chainTransfer{
			BlockNumber: l.BlockNumber, BlockHash: strings.ToLower(l.BlockHash.Hex()), TxHash: strings.ToLower(l.TxHash.Hex()),
			LogIndex: uint32(l.Index), Token: strings.ToLower(l.Address.Hex()),
			From: strings.ToLower(common.BytesToAddress(l.Topics[1][:]).Hex()), To: strings.ToLower(common.BytesToAddress(l.Topics[2][:]).Hex()),
			Amount: new(big.Int).SetBytes(l.Data).String(),
		})
	}
	return out
}

// indexed reads the live transfers from ClickHouse (FINAL, not deleted).
func indexed(t *testing.T, db dbtest.DBs, chainID uint64) []chainTransfer {
	t.Helper()
	rows, err := db.CH.Query(context.Background(), `SELECT block_number, block_hash, tx_hash, log_index, token, from_address, to_address, amount_raw, amount, amount_overflow
		FROM transfers FINAL WHERE chain_id = ? AND deleted = 0`, chainID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []chainTransfer
	for rows.Next() {
		var c chainTransfer
		var dec decimal.Decimal
		var overflow uint8
		if err := rows.Scan(&c.BlockNumber, &c.BlockHash, &c.TxHash, &c.LogIndex, &c.Token, &c.From, &c.To, &c.Amount, &dec, &overflow); err != nil {
			t.Fatal(err)
		}
		// Compared in binary: 18.16's toString(Decimal128) misprints
		// values whose lower 19 digits start with zeros.
		if overflow == 0 && dec.String() != c.Amount {
			t.Errorf("%s: amount %s differs from amount_raw %s", c.key(), dec, c.Amount)
		}
		out = append(out, c)
	}
	return out
}

// sameTransfers compares as multisets: a duplicate on either side fails.
func sameTransfers(t *testing.T, want, got []chainTransfer) {
	t.Helper()
	sortT := func(s []chainTransfer) {
		sort.Slice(s, func(i, j int) bool { return s[i].key() < s[j].key() })
	}
	sortT(want)
	sortT(got)
	if len(want) != len(got) {
		t.Fatalf("indexed %d transfers, chain has %d", len(got), len(want))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("transfer %d differs:\nchain   %+v\nindexed %+v", i, want[i], got[i])
		}
	}
}

type harness struct {
	t       *testing.T
	node    *anvil.Node
	db      dbtest.DBs
	chainID uint64
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

func newRunner(t *testing.T, node *anvil.Node, db dbtest.DBs, url string, tweak func(*indexer.Config)) (*indexer.Runner, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	src, err := evm.New(context.Background(), evm.Config{URL: url, ChainName: "test", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	cfg := indexer.Config{
		ChainID: node.ChainID(), ChainName: "test", Source: src, Postgres: db.PG, ClickHouse: db.CH,
		RangeBlocks: 7, Workers: 3, PollInterval: 50 * time.Millisecond, FlushInterval: 100 * time.Millisecond,
		Registerer: reg,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := indexer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

func start(t *testing.T, node *anvil.Node, db dbtest.DBs, url string, tweak func(*indexer.Config)) *harness {
	t.Helper()
	r, reg := newRunner(t, node, db, url, tweak)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, node: node, db: db, chainID: node.ChainID(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) stop() error {
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("indexer did not stop within 30s of cancel")
		return nil
	}
}

// waitCursor waits until the cursor reaches the node's head with the node's
// head hash.
func waitCursor(t *testing.T, node *anvil.Node, db dbtest.DBs, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for {
		head, err := node.Client().HeaderByNumber(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		var hash string
		err = db.PG.QueryRow(ctx, `SELECT number, hash FROM indexer_cursors WHERE chain_id = $1`, int64(node.ChainID())).Scan(&n, &hash)
		if err == nil && uint64(n) == head.Number.Uint64() && hash == strings.ToLower(head.Hash().Hex()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor at %d %s, head %d %s after %s (err %v)", n, hash, head.Number, head.Hash().Hex(), within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// randomActivity deploys tokens and an NFT and makes mints, transfers and
// batch transfers between the dev accounts.
func randomActivity(t *testing.T, node *anvil.Node, rng *rand.Rand, rounds int) {
	t.Helper()
	ctx := context.Background()
	var tokens []common.Address
	for i, dec := range []uint8{6, 18, 6} {
		a, err := node.DeployTestToken(ctx, anvil.DevKeys[0], fmt.Sprintf("Token%d", i), "TOK", dec)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, a)
	}
	nft, err := node.DeployTestNFT(ctx, anvil.DevKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	huge := new(big.Int).Exp(big.NewInt(10), big.NewInt(60), nil) // beyond Decimal(38, 0)
	for _, tok := range tokens {
		for k := range 4 {
			if _, err := node.Mint(ctx, anvil.DevKeys[0], tok, anvil.DevAddress(k), huge); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range rounds {
		tok := tokens[rng.IntN(len(tokens))]
		from := rng.IntN(4)
		switch rng.IntN(4) {
		case 0:
			var tos []common.Address
			var amts []*big.Int
			for range 1 + rng.IntN(20) {
				tos = append(tos, common.BigToAddress(big.NewInt(rng.Int64N(1<<40)+1)))
				amts = append(amts, big.NewInt(rng.Int64N(1_000_000_000)+1))
			}
			if _, err := node.BatchTransfer(ctx, anvil.DevKeys[from], tok, tos, amts); err != nil {
				t.Fatal(err)
			}
		case 1:
			if _, err := node.MintNFT(ctx, anvil.DevKeys[0], nft, anvil.DevAddress(from), big.NewInt(int64(i))); err != nil {
				t.Fatal(err)
			}
		default:
			amt := new(big.Int).Mul(new(big.Int).SetUint64(rng.Uint64()), big.NewInt(rng.Int64N(1e12)+1))
			if _, err := node.Transfer(ctx, anvil.DevKeys[from], tok, anvil.DevAddress(rng.IntN(10)), amt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestIndexesEveryTransferExactlyOnce(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	rng := rand.New(rand.NewPCG(1, 2))
	randomActivity(t, node, rng, 40) // part of the history exists before the indexer starts
	h := start(t, node, db, node.URL(), nil)
	randomActivity(t, node, rng, 40) // and part arrives while it follows the head
	waitCursor(t, node, db, 60*time.Second)
	want := chainTransfers(t, node)
	if len(want) < 200 {
		t.Fatalf("only %d transfers on chain; the test needs more activity", len(want))
	}
	sameTransfers(t, want, indexed(t, db, node.ChainID()))
	var overflow uint64
	if err := db.CH.QueryRow(context.Background(), `SELECT count() FROM transfers FINAL WHERE amount_overflow = 1`).Scan(&overflow); err != nil || overflow == 0 {
		t.Errorf("no amount beyond Decimal(38, 0) was flagged (%d, %v)", overflow, err)
	}
	// Every block exactly once.
	head, _ := node.Client().BlockNumber(context.Background())
	var blocks, distinct uint64
	if err := db.CH.QueryRow(context.Background(), `SELECT count(), uniqExact(number) FROM blocks FINAL WHERE deleted = 0`).Scan(&blocks, &distinct); err != nil {
		t.Fatal(err)
	}
	if blocks != head+1 || distinct != head+1 {
		t.Errorf("blocks: %d rows, %d numbers; want %d", blocks, distinct, head+1)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}

	// Re-running batches (a crash after the insert, before the cursor
	// moved) changes no FINAL result.
	if _, err := db.PG.Exec(context.Background(), `UPDATE indexer_cursors SET number = 3, hash = $2 WHERE chain_id = $1`, int64(node.ChainID()), hashAt(t, node, 3)); err != nil {
		t.Fatal(err)
	}
	start(t, node, db, node.URL(), nil)
	waitCursor(t, node, db, 60*time.Second)
	sameTransfers(t, want, indexed(t, db, node.ChainID()))
}

// hashAt returns the node's block hash at height n (-1: the head).
func hashAt(t *testing.T, node *anvil.Node, n int64) string {
	t.Helper()
	var num *big.Int
	if n >= 0 {
		num = big.NewInt(n)
	}
	h, err := node.Client().HeaderByNumber(context.Background(), num)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(h.Hash().Hex())
}
