package delivery

import (
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/settle-dev/settle/internal/anvil"
)

// addReceiver inserts a session's receiver at derivation index i and
// deposits into it: amounts with a status ('final' or 'seen') and whether
// they are credited. It mints their sum to the receiver and returns its
// address and the receiver id.
func (f *fixture) addReceiver(i uint32, deposits ...struct {
	amount   int64
	status   string
	credited bool
}) (common.Address, int64) {
	f.t.Helper()
	key, err := f.master.PrivateKey(i)
	if err != nil {
		f.t.Fatal(err)
	}
	addr := crypto.PubkeyToAddress(key.PublicKey)
	sid := randomHex(f.t, 16)
	if _, err := f.db.PG.Exec(f.ctx, `INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ($1, 'm_test', 'processing', 'evm', $2, $3, 'anvil', $4, 'TUSD', 6, '{}', 'secret', now(), now() + interval '1 hour')`,
		sid, hexAddr(randomAddress(f.t)), int64(f.node.ChainID()), hexAddr(f.token)); err != nil {
		f.t.Fatal(err)
	}
	var rid int64
	if err := f.db.PG.QueryRow(f.ctx, `INSERT INTO receivers (family, address, derivation_index, session_id, merchant_id)
		VALUES ('evm', $1, $2, $3, 'm_test') RETURNING id`, hexAddr(addr), int64(i), sid).Scan(&rid); err != nil {
		f.t.Fatal(err)
	}
	total := new(big.Int)
	for n, d := range deposits {
		var exception *string
		if !d.credited {
			e := "wrong_token"
			exception = &e
		}
		if _, err := f.db.PG.Exec(f.ctx, `INSERT INTO deposits (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token,
			from_address, to_address, amount, receiver_id, session_id, status, credited, exception)
			VALUES ($1, 1, $2, now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			int64(f.node.ChainID()), "0x"+randomHex(f.t, 32), "0x"+randomHex(f.t, 32), n, hexAddr(f.token), hexAddr(randomAddress(f.t)),
			hexAddr(addr), d.amount, rid, sid, d.status, d.credited, exception); err != nil {
			f.t.Fatal(err)
		}
		total.Add(total, big.NewInt(d.amount))
	}
	if _, err := f.node.Mint(f.ctx, anvil.DevKeys[0], f.token, addr, total); err != nil {
		f.t.Fatal(err)
	}
	return addr, rid
}

type dep = struct {
	amount   int64
	status   string
	credited bool
}

func (f *fixture) sweep(receiverID int64) (status string, amount string, gasHash, txHash *string) {
	f.t.Helper()
	err := f.db.PG.QueryRow(f.ctx, `SELECT status, amount::text, gas_tx_hash, tx_hash FROM sweeps WHERE receiver_id = $1`, receiverID).
		Scan(&status, &amount, &gasHash, &txHash)
	if err != nil {
		return "", "", nil, nil
	}
	return status, amount, gasHash, txHash
}

// Credited, final deposits are swept into the treasury: the treasury tops
// up the receiver's gas, the receiver sends exactly their sum (an unfinal
// deposit and an exception stay where they are), and once the sweep is
// final it is on the ledger as sweep and sweep_gas. Dust below the
// token's threshold is not swept. The top-up is signed and stored before
// it is sent: an executor that stops before sending is succeeded by one
// that sends the same bytes.
func TestSweepMovesOnlyFinalCreditedDeposits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sweepCfg := func(c *Config) {
		c.ReceiverKey = f.master.PrivateKey
		c.SweepMin = map[uint64]map[common.Address]*big.Int{f.node.ChainID(): {f.token: big.NewInt(10_000_000)}}
		c.Finality = map[uint64]Finality{f.node.ChainID(): {Depth: 2}}
		c.WatchEvery = time.Millisecond
		c.RebroadcastAfter = time.Millisecond
	}
	recv, rid := f.addReceiver(7, dep{20_000_000, "final", true}, dep{5_000_000, "seen", true}, dep{3_000_000, "final", false})
	_, dustID := f.addReceiver(8, dep{1_000_000, "final", true})
	treasuryBefore := f.balance(f.treasury)

	crashed, _ := f.executor(sweepCfg)
	crashed.skipBroadcast = true
	if _, err := crashed.RunOnce(f.ctx); err != nil {
		t.Fatal(err)
	}
	status, amount, gasHash, _ := f.sweep(rid)
	if status != "gas_sent" || amount != "20000000" || gasHash == nil || f.chainNonce() != 0 {
		t.Fatalf("after a pass that did not broadcast: sweep %s %s gas %v, chain nonce %d", status, amount, gasHash, f.chainNonce())
	}
	if s, _, _, _ := f.sweep(dustID); s != "" {
		t.Errorf("dust receiver swept: %s", s)
	}

	e, reg := f.executor(sweepCfg)
	f.runUntil(e, 30*time.Second, func() bool { s, _, _, _ := f.sweep(rid); return s == "mined" })
	if _, _, g, _ := f.sweep(rid); *g != *gasHash {
		t.Errorf("gas top-up re-signed: %s, want the stored %s", *g, *gasHash)
	}
	if err := f.node.Mine(f.ctx, 3); err != nil {
		t.Fatal(err)
	}
	f.runUntil(e, 30*time.Second, func() bool { s, _, _, _ := f.sweep(rid); return s == "confirmed" })
	_, _, _, txHash := f.sweep(rid)

	if got := f.balance(recv); got.Int64() != 8_000_000 {
		t.Errorf("receiver holds %s after the sweep, want 8000000 (the unfinal deposit and the exception)", got)
	}
	if got := new(big.Int).Sub(f.balance(f.treasury), treasuryBefore); got.Int64() != 20_000_000 {
		t.Errorf("treasury gained %s, want 20000000", got)
	}
	var swept, unswept int
	if err := f.db.PG.QueryRow(f.ctx, `SELECT count(*) FILTER (WHERE sweep_id IS NOT NULL), count(*) FILTER (WHERE sweep_id IS NULL)
		FROM deposits WHERE receiver_id = $1`, rid).Scan(&swept, &unswept); err != nil || swept != 1 || unswept != 2 {
		t.Errorf("deposits swept %d unswept %d (%v), want 1 and 2", swept, unswept, err)
	}
	rows, err := f.db.PG.Query(f.ctx, `SELECT kind, amount::text, from_address, to_address, tx_hash FROM ledger_entries
		WHERE kind IN ('sweep', 'sweep_gas') ORDER BY kind`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var kind, amount, from, to, tx string
		if err := rows.Scan(&kind, &amount, &from, &to, &tx); err != nil {
			t.Fatal(err)
		}
		if kind == "sweep" && (amount != "20000000" || from != hexAddr(recv) || to != hexAddr(f.treasury) || tx != *txHash) {
			t.Errorf("sweep entry %s %s→%s %s", amount, from, to, tx)
		}
		if kind == "sweep_gas" && (amount == "0" || tx != *gasHash) {
			t.Errorf("sweep_gas entry %s %s", amount, tx)
		}
		got = append(got, kind)
	}
	rows.Close()
	if len(got) != 2 {
		t.Errorf("ledger entries %v, want sweep and sweep_gas", got)
	}
	r, err := f.node.Client().TransactionReceipt(f.ctx, common.HexToHash(*txHash))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep transfer gas used %d (plus 21000 for the top-up)", r.GasUsed)
	if res, err := e.RunOnce(f.ctx); err != nil || res.Progress() {
		t.Errorf("pass after the sweep: %+v %v", res, err)
	}
	if got := metricValue(t, reg, "settle_sweeps_total", map[string]string{"outcome": "confirmed"}); got != 1 {
		t.Errorf("confirmed sweeps metric %v, want 1", got)
	}
}
