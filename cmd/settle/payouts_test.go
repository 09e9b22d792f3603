package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/delivery"
	"github.com/settle-dev/settle/internal/dbtest"
)

func TestPayoutsCommands(t *testing.T) {
	db := dbtest.Migrated(t)
	// The environment overrides the config file; point it at the test
	// database (dbtest has read the admin URL already).
	t.Setenv("SETTLE_POSTGRES_URL", db.PostgresURL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token := common.HexToAddress("0x5fbdb2315678afecb367f032d93f642f64180aa3")
	cfgPath := filepath.Join(t.TempDir(), "settle.yaml")
	if err := os.WriteFile(cfgPath, []byte("chains: [{name: anvil, id: 31337, family: evm, tokens: [{symbol: TUSD, address: '"+
		token.Hex()+"', decimals: 6}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const session = "0123456789abcdef0123456789abcdef"
	for _, q := range []string{
		`INSERT INTO merchants (id, name) VALUES ('m_test', 'M')`,
		`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name,
			dest_token_address, dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
			VALUES ('` + session + `', 'm_test', 'processing', 'evm', '0x00000000000000000000000000000000000000bb', 31337, 'anvil',
			'` + strings.ToLower(token.Hex()) + `', 'TUSD', 6, '{}', 's', now(), now() + interval '1 hour')`,
	} {
		if _, err := db.PG.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var id int64
	if err := db.PG.QueryRow(ctx, `INSERT INTO payouts (session_id, kind, chain_id, token, to_address, amount, status, error, created_at)
		VALUES ($1, 'delivery', 31337, $2, '0x00000000000000000000000000000000000000bb', 2500000, 'needs_attention',
		'chain 31337 has no executor_address:
		a payout with calldata cannot be delivered there', now() - interval '90 minutes') RETURNING id`,
		session, strings.ToLower(token.Hex())).Scan(&id); err != nil {
		t.Fatal(err)
	}
	settle := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, "-config", cfgPath), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	ids := strconv.FormatInt(id, 10)

	out, err := settle("payouts", "list")
	if err != nil {
		t.Fatalf("payouts list: %v\n%s", err, out)
	}
	t.Logf("payouts list:\n%s", out)
	header, row, _ := strings.Cut(out, "\n")
	for _, col := range []string{"ID", "SESSION", "KIND", "CHAIN", "AMOUNT", "STATUS", "AGE", "REASON"} {
		if !strings.Contains(header, col) {
			t.Errorf("list header %q lacks %s", header, col)
		}
	}
	for _, want := range []string{ids + " ", session, "delivery", "anvil", "2.5 TUSD", "needs_attention", "1h30m",
		"has no executor_address: a payout with calldata"} {
		if !strings.Contains(row, want) {
			t.Errorf("list row lacks %q:\n%s", want, out)
		}
	}

	if out, err := settle("payouts", "retry", "-id", ids); err == nil || !strings.Contains(err.Error(), "-note is required") {
		t.Errorf("retry without a note: %v\n%s", err, out)
	}
	if out, err := settle("payouts", "retry", "-note", "x"); err == nil || !strings.Contains(err.Error(), "-id is required") {
		t.Errorf("retry without an id: %v\n%s", err, out)
	}
	t.Setenv("USER", "carol")
	if out, err := settle("payouts", "retry", "-id", ids, "-note", "executor deployed"); err != nil || !strings.Contains(out, "handed back") {
		t.Fatalf("payouts retry: %v\n%s", err, out)
	}
	var operator, note, status string
	if err := db.PG.QueryRow(ctx, `SELECT l.operator, l.note, p.status FROM ledger_entries l, payouts p
		WHERE l.kind = 'operator' AND l.reason = 'payout_retry' AND p.id = $1`, id).Scan(&operator, &note, &status); err != nil {
		t.Fatal(err)
	}
	if operator != "carol" || note != "executor deployed" || status != "pending" {
		t.Errorf("after retry: operator %q note %q status %s; want $USER carol, the note, pending", operator, note, status)
	}
	if out, err := settle("payouts", "list"); err != nil || !strings.Contains(out, "no payouts need attention") {
		t.Errorf("list after retry: %v\n%s", err, out)
	}
	if out, err := settle("payouts", "abandon", "-id", ids, "-note", "too late", "-operator", "dave"); !errors.Is(err, delivery.ErrNotParked) {
		t.Errorf("abandon of a pending payout: %v\n%s", err, out)
	}
	if out, err := settle("payouts", "frobnicate"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown payouts subcommand: %v\n%s", err, out)
	}
}
