package reconciler

import (
	"context"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// The harness drives the reconciler against real Postgres and ClickHouse:
// blocks and transfers are written to ClickHouse as the indexer writes
// them (a reorg is a tombstone with a higher version), the indexer cursor
// to Postgres, and sessions through the store the API uses.

const (
	testChainID = 31337
	usdc        = "0x00000000000000000000000000000000000000c1" // 6 decimals
	dai         = "0x00000000000000000000000000000000000000d1" // 18 decimals
	treasury    = "0x00000000000000000000000000000000000000fe"
	merchantDst = "0x00000000000000000000000000000000000000aa"
	payer       = "0x00000000000000000000000000000000000000bb"
)

type harness struct {
	t       testing.TB
	ctx     context.Context
	pg      *pgxpool.Pool
	ch      driver.Conn
	st      *store.Store
	chains  *chain.Registry
	c       *chain.Chain
	r       *Reconciler
	now     atomic.Pointer[time.Time]
	version atomic.Uint64
	// base is block 0's time; block n is stamped base + n seconds.
	base     time.Time
	merchant string
	head     uint64
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	db := dbtest.Migrated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	reg, err := chain.NewRegistry([]chain.Chain{{ID: testChainID, Name: "Test", Family: chain.FamilyEVM, Indexed: true, Tokens: []chain.Token{
		{Symbol: "USDC", Address: usdc, Decimals: 6}, {Symbol: "DAI", Address: dai, Decimals: 18}}}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := reg.Chain(testChainID)
	h := &harness{t: t, ctx: ctx, pg: db.PG, ch: db.CH, st: store.New(db.PG), chains: reg, c: c,
		base: time.Now().Add(-time.Hour).Truncate(time.Second)}
	now := time.Now()
	h.now.Store(&now)
	h.r, err = New(Config{Chains: reg, Postgres: db.PG, ClickHouse: db.CH, Treasury: treasury,
		Options: map[uint64]ChainOptions{testChainID: {FinalityDepth: 2}},
		Now:     func() time.Time { return *h.now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	m, err := h.st.CreateMerchant(ctx, "harness")
	if err != nil {
		t.Fatal(err)
	}
	h.merchant = m.ID
	return h
}

func (h *harness) setNow(t time.Time) { h.now.Store(&t) }

// blockTime is the timestamp of block n.
func (h *harness) blockTime(n uint64) time.Time { return h.base.Add(time.Duration(n) * time.Second) }

type xfer struct {
	token, from, to string
	amount          *big.Int
	tx              string
	log             uint32
}

// block writes block n with hash and its transfers, live, and moves the
// indexer cursor to it.
func (h *harness) block(n uint64, hash string, transfers ...xfer) {
	h.t.Helper()
	h.writeBlock(n, hash, 0, transfers)
	if _, err := h.pg.Exec(h.ctx, `INSERT INTO indexer_cursors (chain_id, number, hash) VALUES ($1, $2, $3)
		ON CONFLICT (chain_id) DO UPDATE SET number = excluded.number, hash = excluded.hash`, testChainID, int64(n), hash); err != nil {
		h.t.Fatal(err)
	}
	h.head = n
}

// orphan tombstones block n with hash and its transfers, as the indexer
// does when a reorg replaces it.
func (h *harness) orphan(n uint64, hash string, transfers ...xfer) {
	h.t.Helper()
	h.writeBlock(n, hash, 1, transfers)
}

func (h *harness) writeBlock(n uint64, hash string, deleted uint8, transfers []xfer) {
	h.t.Helper()
	v := h.version.Add(1)
	bt := h.blockTime(n)
	b, err := h.ch.PrepareBatch(h.ctx, `INSERT INTO blocks (chain_id, number, hash, parent_hash, time, transfers, deleted, version)`)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := b.Append(uint64(testChainID), n, hash, "", bt, uint32(len(transfers)), deleted, v); err != nil {
		h.t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		h.t.Fatal(err)
	}
	if len(transfers) == 0 {
		return
	}
	tb, err := h.ch.PrepareBatch(h.ctx, `INSERT INTO transfers (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token,
		from_address, to_address, amount_raw, amount_overflow, deleted, version)`)
	if err != nil {
		h.t.Fatal(err)
	}
	for i, x := range transfers {
		tx := x.tx
		if tx == "" {
			tx = fmt.Sprintf("0x%064x", uint64(n)<<20|uint64(i))
		}
		if err := tb.Append(uint64(testChainID), n, hash, bt, tx, x.log, x.token, x.from, x.to, x.amount.String(), uint8(0), deleted, v); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := tb.Send(); err != nil {
		h.t.Fatal(err)
	}
}

// step runs the chain's reconciler until it has attributed everything
// indexed.
func (h *harness) step() {
	h.t.Helper()
	for range 100 {
		more, err := h.r.StepChain(h.ctx, h.c)
		if err != nil {
			h.t.Fatal(err)
		}
		if !more {
			return
		}
	}
	h.t.Fatal("StepChain still reports more after 100 steps")
}

// sessionOpts shape a test session.
type sessionOpts struct {
	token    string // destination token; default usdc
	decimals uint8  // default 6
	amount   *big.Int
	expires  time.Time // default an hour after now
}

// session creates a session with an EVM receiver and returns its id and
// the receiver's address.
func (h *harness) session(o sessionOpts) (id, receiver string) {
	h.t.Helper()
	if o.token == "" {
		o.token, o.decimals = usdc, 6
	}
	now := *h.now.Load()
	if o.expires.IsZero() {
		o.expires = now.Add(time.Hour)
	}
	n := h.version.Add(1)
	id = fmt.Sprintf("%016x%016x", uint64(time.Now().UnixNano()), n)
	ss := &session.Session{ID: id, MerchantID: h.merchant, Status: session.RequiresPaymentMethod,
		Destination: session.Destination{Type: "evm", Address: merchantDst, ChainID: testChainID, ChainName: "Test",
			TokenAddress: o.token, TokenSymbol: "X", AmountRaw: o.amount},
		ClientSecret: "cs_" + id, CreatedAt: h.base.Add(-time.Minute), ExpiresAt: o.expires}
	if o.amount != nil {
		ss.Destination.AmountUnits = chain.FormatUnits(o.amount, o.decimals)
	}
	if err := h.st.CreateSession(h.ctx, ss, o.decimals); err != nil {
		h.t.Fatal(err)
	}
	_, rc, err := h.st.SetReceiverPaymentMethod(h.ctx, id, "evm", "evm", func(i uint32) (string, error) {
		return fmt.Sprintf("0x%040x", uint64(0xabc0000000)+uint64(i)), nil
	}, h.base.Add(-time.Second))
	if err != nil {
		h.t.Fatal(err)
	}
	return id, rc.Address
}

func (h *harness) status(id string) session.Status {
	h.t.Helper()
	var s string
	if err := h.pg.QueryRow(h.ctx, `SELECT status FROM sessions WHERE id = $1`, id).Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	return session.Status(s)
}

// payouts returns the session's payouts by kind, with their amounts.
func (h *harness) payouts(id string) map[string]string {
	h.t.Helper()
	rows, err := h.pg.Query(h.ctx, `SELECT kind, amount::text FROM payouts WHERE session_id = $1`, id)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, a string
		if err := rows.Scan(&k, &a); err != nil {
			h.t.Fatal(err)
		}
		out[k] = a
	}
	return out
}

// deposits returns the session's deposits as "status/credited" strings.
func (h *harness) deposits(id string) []string {
	h.t.Helper()
	rows, err := h.pg.Query(h.ctx, `SELECT status::text, credited FROM deposits WHERE session_id = $1 ORDER BY id`, id)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		var c bool
		if err := rows.Scan(&s, &c); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s/%v", s, c))
	}
	return out
}

// classified returns how the deposit of transaction tx was applied:
// credited, or the exception's reason.
func (h *harness) classified(tx string) (credited bool, reason string) {
	h.t.Helper()
	var r *string
	if err := h.pg.QueryRow(h.ctx, `SELECT credited, exception FROM deposits WHERE tx_hash = $1`, tx).Scan(&credited, &r); err != nil {
		h.t.Fatal(err)
	}
	if r != nil {
		reason = *r
	}
	return credited, reason
}

// ledger returns the session's ledger entry ids in order.
func (h *harness) ledger(id string) []string {
	h.t.Helper()
	rows, err := h.pg.Query(h.ctx, `SELECT entry_id FROM ledger_entries WHERE session_id = $1 ORDER BY id`, id)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func units(v int64, decimals int) *big.Int {
	return new(big.Int).Mul(big.NewInt(v), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil))
}
