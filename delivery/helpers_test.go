package delivery

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/hdwallet"
)

// treasuryFunds are the test treasury's token units (6 decimals).
const treasuryFunds = 1_000_000_000_000

// fixture is a migrated database, an anvil chain with a TestToken, and a
// funded treasury.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	db       dbtest.DBs
	node     *anvil.Node
	token    common.Address
	key      *ecdsa.PrivateKey
	treasury common.Address
	// executorAddr is a SettleExecutor owned by the treasury.
	executorAddr common.Address
	// master derives the receivers (and the treasury key).
	master *hdwallet.Master
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := dbtest.Migrated(t)
	node := anviltest.Start(t, anvil.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	token, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Test USD", "TUSD", 6)
	if err != nil {
		t.Fatal(err)
	}
	m, err := hdwallet.MasterFromSeed(bytes.Repeat([]byte{0x5e}, 32))
	if err != nil {
		t.Fatal(err)
	}
	key, err := m.TreasuryKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, node: node, token: token, key: key, treasury: crypto.PubkeyToAddress(key.PublicKey), master: m}
	if err := node.SetBalance(ctx, f.treasury, new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18))); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Mint(ctx, anvil.DevKeys[0], token, f.treasury, big.NewInt(treasuryFunds)); err != nil {
		t.Fatal(err)
	}
	// Anyone may deploy an executor; it only obeys the treasury it names.
	if f.executorAddr, err = node.DeployCode(ctx, anvil.DevKeys[0], evm.DeployData(f.treasury)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PG.Exec(ctx, `INSERT INTO merchants (id, name) VALUES ('m_test', 'Test merchant')`); err != nil {
		t.Fatal(err)
	}
	return f
}

// executor returns a new Executor on the fixture's chain, with its own
// registry, logging through t.
func (f *fixture) executor(tweak func(*Config)) (*Executor, *prometheus.Registry) {
	f.t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Postgres:   f.db.PG,
		Chains:     map[uint64]ChainClient{f.node.ChainID(): f.node.Client()},
		Tokens:     map[uint64][]Token{f.node.ChainID(): {{Address: f.token, Symbol: "TUSD", Decimals: 6}}},
		Executors:  map[uint64]common.Address{f.node.ChainID(): f.executorAddr},
		Treasury:   f.key,
		Logger:     slog.New(slog.NewTextHandler(testWriter{f.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	if e.Address() != f.treasury {
		f.t.Fatalf("executor address %s, want treasury %s", e.Address(), f.treasury)
	}
	return e, reg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomAddress(t *testing.T) common.Address {
	return common.HexToAddress(randomHex(t, 20))
}

// addPayout inserts a session and a delivery payout of amount to `to`;
// calldata nil makes a plain transfer.
func (f *fixture) addPayout(to common.Address, amount int64, calldata []byte) int64 {
	f.t.Helper()
	sid := randomHex(f.t, 16)
	_, err := f.db.PG.Exec(f.ctx, `INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ($1, 'm_test', 'processing', 'evm', $2, $3, 'anvil', $4, 'TUSD', 6, '{}', 'secret', now(), now() + interval '1 hour')`,
		sid, hexAddr(to), int64(f.node.ChainID()), hexAddr(f.token))
	if err != nil {
		f.t.Fatal(err)
	}
	var cd *string
	if calldata != nil {
		s := hexutil.Encode(calldata)
		cd = &s
	}
	var id int64
	err = f.db.PG.QueryRow(f.ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, calldata)
		VALUES ($1, 'delivery', $2, $3, $4, $5, $6) RETURNING id`,
		sid, int64(f.node.ChainID()), hexAddr(f.token), hexAddr(to), amount, cd).Scan(&id)
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// payoutRow is what the tests read back from payouts.
type payoutRow struct {
	Status           string
	From             *string
	Nonce, FundNonce *int64
	TxHash, FundHash *string
	Runner           *string
	CallGas          *int64
	RawTx, FundRaw   []byte
	Prior            []string
	ReceiptBlock     *int64
	ReceiptHash      *string
	ReceiptFinal     bool
	Error            *string
	SentAt           *time.Time
}

func (f *fixture) payout(id int64) payoutRow {
	f.t.Helper()
	var p payoutRow
	err := f.db.PG.QueryRow(f.ctx, `SELECT status, from_address, nonce, fund_nonce, tx_hash, fund_tx_hash, runner_address, call_gas,
		raw_tx, fund_raw_tx, receipt_block_number, receipt_block_hash, receipt_final,
		prior_tx_hashes, error, sent_at FROM payouts WHERE id = $1`, id).
		Scan(&p.Status, &p.From, &p.Nonce, &p.FundNonce, &p.TxHash, &p.FundHash, &p.Runner, &p.CallGas,
			&p.RawTx, &p.FundRaw, &p.ReceiptBlock, &p.ReceiptHash, &p.ReceiptFinal,
			&p.Prior, &p.Error, &p.SentAt)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// runUntil runs passes of e until done says so, failing after within.
// It returns the sum of the passes' results.
func (f *fixture) runUntil(e *Executor, within time.Duration, done func() bool) Result {
	f.t.Helper()
	var total Result
	deadline := time.Now().Add(within)
	for !done() {
		if time.Now().After(deadline) {
			f.t.Fatalf("not done within %s; passes summed to %+v", within, total)
		}
		res, err := e.RunOnce(f.ctx)
		if err != nil {
			f.t.Fatal(err)
		}
		total.add(res)
		time.Sleep(20 * time.Millisecond)
	}
	return total
}

func (f *fixture) status(id int64) func() bool {
	return func() bool { return f.payout(id).Status != "pending" && f.payout(id).Status != "sent" }
}

func (f *fixture) balance(owner common.Address) *big.Int {
	f.t.Helper()
	b, err := f.node.BalanceOf(f.ctx, f.token, owner)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// allowanceAt reads the token's allowance(owner, spender) at block (nil:
// the latest).
func (f *fixture) allowanceAt(owner, spender common.Address, block *big.Int) *big.Int {
	f.t.Helper()
	data := concat(selector("allowance(address,address)"), addressWord(owner), addressWord(spender))
	out, err := f.node.Client().CallContract(f.ctx, ethereum.CallMsg{To: &f.token, Data: data}, block)
	if err != nil {
		f.t.Fatal(err)
	}
	return new(big.Int).SetBytes(out)
}

// transfersFromTreasury returns the token's Transfer logs from the
// treasury, by recipient.
func (f *fixture) transfersFromTreasury() map[common.Address][]*big.Int {
	f.t.Helper()
	logs, err := f.node.Client().FilterLogs(f.ctx, ethereum.FilterQuery{
		FromBlock: big.NewInt(0),
		Addresses: []common.Address{f.token},
		Topics:    [][]common.Hash{{anvil.TransferTopic}, {common.BytesToHash(f.treasury.Bytes())}},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	out := make(map[common.Address][]*big.Int)
	for _, l := range logs {
		to := common.BytesToAddress(l.Topics[2].Bytes())
		out[to] = append(out[to], new(big.Int).SetBytes(l.Data))
	}
	return out
}

// chainNonce is the treasury's nonce at the latest block: how many of its
// transactions are mined.
func (f *fixture) chainNonce() uint64 {
	f.t.Helper()
	n, err := f.node.Client().NonceAt(f.ctx, f.treasury, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) storedNonce() int64 {
	f.t.Helper()
	var n int64
	if err := f.db.PG.QueryRow(f.ctx, `SELECT next_nonce FROM treasury_nonces WHERE chain_id = $1 AND address = $2`,
		int64(f.node.ChainID()), hexAddr(f.treasury)).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// metricValue reads one series of a counter or gauge from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// decodeTx decodes stored transaction bytes.
func decodeTx(raw []byte) (*types.Transaction, error) {
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		return nil, err
	}
	return tx, nil
}

func hexAddr(a common.Address) string { return strings.ToLower(a.Hex()) }

// ERC-20 calldata, encoded here independently of delivery/evm.

func selector(sig string) []byte { return crypto.Keccak256([]byte(sig))[:4] }

func addressWord(a common.Address) []byte { return common.LeftPadBytes(a.Bytes(), 32) }

func uintWord(v *big.Int) []byte { return math.U256Bytes(new(big.Int).Set(v)) }

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func transferData(to common.Address, amount *big.Int) []byte {
	return concat(selector("transfer(address,uint256)"), addressWord(to), uintWord(amount))
}

func approveData(spender common.Address, amount *big.Int) []byte {
	return concat(selector("approve(address,uint256)"), addressWord(spender), uintWord(amount))
}
