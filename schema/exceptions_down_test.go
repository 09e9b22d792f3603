package schema_test

import (
	"context"
	"strings"
	"testing"

	"github.com/settle-dev/settle/internal/dbtest"
)

// 0015 (the exceptions inbox) rolls back and forward again. A refund of an
// exception stops the rollback (the old schema cannot hold it, and it may
// be moving money); without one, a session is back to one payout of each
// kind.
func TestExceptionsDownAndUp(t *testing.T) {
	db := dbtest.Migrated(t)
	ctx := context.Background()
	exec := func(q string) error {
		_, err := db.PG.Exec(ctx, q)
		return err
	}
	must := func(q string) {
		t.Helper()
		if err := exec(q); err != nil {
			t.Fatal(err)
		}
	}
	must(`INSERT INTO merchants (id, name) VALUES ('m', 'M')`)
	must(`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
		dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
		VALUES ('0123456789abcdef0123456789abcdef', 'm', 'succeeded', 'evm', '0xb', 1, 'c', '0xt', 'T', 6, '{}', 's', now(), now() + interval '1 hour')`)
	must(`INSERT INTO ledger_entries (id, entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol, decimals,
		from_address, to_address, tx_hash, amount, event_time)
		VALUES (7, 'overpaid:0123456789abcdef0123456789abcdef', 'exception', 'overpaid', '0123456789abcdef0123456789abcdef', 'm', 1, '0xt', 'T', 6, '', '0xb', '', 5, now())`)
	must(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount)
		VALUES ('0123456789abcdef0123456789abcdef', 'delivery', 1, '0xt', '0xb', 10)`)
	must(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, exception_id)
		VALUES ('0123456789abcdef0123456789abcdef', 'exception_refund', 1, '0xt', '0xc', 5, 7)`)
	// An exception is refunded at most once, and an exception refund is
	// keyed by its exception.
	if err := exec(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, exception_id)
		VALUES ('0123456789abcdef0123456789abcdef', 'exception_refund', 1, '0xt', '0xd', 5, 7)`); err == nil {
		t.Error("a second refund of one exception was accepted")
	}
	if err := exec(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount)
		VALUES ('0123456789abcdef0123456789abcdef', 'exception_refund', 1, '0xt', '0xd', 5)`); err == nil {
		t.Error("an exception refund without its exception was accepted")
	}
	if err := exec(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount)
		VALUES ('0123456789abcdef0123456789abcdef', 'delivery', 1, '0xt', '0xb', 10)`); err == nil {
		t.Error("a second delivery of one session was accepted")
	}
	if err := applyFiles(t, db.PG, 15, ".down.sql"); err == nil || !strings.Contains(err.Error(), "exception refunds") {
		t.Fatalf("rollback with an exception refund: %v, want a refusal", err)
	}
	must(`DELETE FROM payouts WHERE kind = 'exception_refund'`)
	if err := applyFiles(t, db.PG, 15, ".down.sql"); err != nil {
		t.Fatalf("rolling back 0015 and later: %v", err)
	}
	if err := exec(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount)
		VALUES ('0123456789abcdef0123456789abcdef', 'delivery', 1, '0xt', '0xb', 10)`); err == nil {
		t.Error("after rollback, a second delivery of one session was accepted")
	}
	if err := applyFiles(t, db.PG, 15, ".up.sql"); err != nil {
		t.Fatalf("migrating 0015 and later up again: %v", err)
	}
	must(`INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, exception_id)
		VALUES ('0123456789abcdef0123456789abcdef', 'exception_refund', 1, '0xt', '0xc', 5, 7)`)
}
