package delivery

import (
	"bytes"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/store"
)

// A refund from the exceptions inbox (store.RefundException) is a payout
// like any other to the executor: signed from the treasury, mined, paying
// exactly the exception's amount once to the address the merchant gave,
// and the inbox then shows its transaction.
func TestExceptionRefundIsPaidOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st := store.New(f.db.PG)
	_, keyID, err := st.CreateAPIKey(f.ctx, "m_test")
	if err != nil {
		t.Fatal(err)
	}
	sid := randomHex(t, 16)
	if _, err := f.db.PG.Exec(f.ctx, `INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ($1, 'm_test', 'succeeded', 'evm', $2, $3, 'anvil', $4, 'TUSD', 6, '{}', 'secret', now(), now() + interval '1 hour')`,
		sid, hexAddr(randomAddress(t)), int64(f.node.ChainID()), hexAddr(f.token)); err != nil {
		t.Fatal(err)
	}
	// What the reconciler records when a delivery leaves a surplus: the
	// treasury holds it for the payer.
	const amount = 1_500_000
	var entry int64
	if err := f.db.PG.QueryRow(f.ctx, `INSERT INTO ledger_entries (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, amount, event_time)
		VALUES ($1, 'exception', 'overpaid', $2, 'm_test', $3, $4, 'TUSD', 6, '', '', '', $5, now()) RETURNING id`,
		"overpaid:"+sid, sid, int64(f.node.ChainID()), hexAddr(f.token), amount).Scan(&entry); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("exc_%d", entry)
	dest := randomAddress(t)
	if _, err := st.RefundException(f.ctx, store.ExceptionAction{MerchantID: "m_test", APIKeyID: keyID, ID: id}, dest.Hex()); err != nil {
		t.Fatal(err)
	}
	var payout int64
	if err := f.db.PG.QueryRow(f.ctx, `SELECT id FROM payouts WHERE exception_id = $1`, entry).Scan(&payout); err != nil {
		t.Fatal(err)
	}
	e, reg := f.executor(nil)
	f.runUntil(e, 15*time.Second, f.status(payout))
	p := f.payout(payout)
	if p.Status != "mined" || p.TxHash == nil {
		t.Fatalf("exception refund %s (%v)", p.Status, p.Error)
	}
	stored, err := decodeTx(p.RawTx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored.Data(), transferData(dest, big.NewInt(amount))) || *stored.To() != f.token {
		t.Errorf("signed %x to %s, want a transfer of %d to %s on the token", stored.Data(), stored.To(), amount, dest)
	}
	if got := f.balance(dest); got.Int64() != amount {
		t.Errorf("refund address holds %s, want %d", got, amount)
	}
	if sent := f.transfersFromTreasury(); len(sent) != 1 || len(sent[dest]) != 1 {
		t.Errorf("transfers from the treasury %v, want one to %s", sent, dest)
	}
	if v := metricValue(t, reg, "settle_payouts_total", map[string]string{"kind": "exception_refund", "outcome": "mined"}); v != 1 {
		t.Errorf("settle_payouts_total{kind=exception_refund,outcome=mined} = %v", v)
	}
	// Further passes pay nothing more.
	for range 3 {
		if _, err := e.RunOnce(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.balance(dest); got.Int64() != amount || f.chainNonce() != 1 {
		t.Errorf("after more passes: %s at the refund address, treasury nonce %d", got, f.chainNonce())
	}
	x, err := st.GetException(f.ctx, "m_test", id)
	if err != nil {
		t.Fatal(err)
	}
	if x.Status != "refunded" || x.Resolution == nil || x.Resolution.TxHash != *p.TxHash {
		t.Errorf("inbox shows %s %+v, want refunded with tx %s", x.Status, x.Resolution, *p.TxHash)
	}
}
