package finance

import (
	"context"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/settle-dev/settle/internal/dbtest"
)

// line is one row of ledger (or, for sweep and sweep_gas, of
// ledger_sweeps) as the reconciler copies it to ClickHouse: only amount_raw
// is written, the server derives amount from it.
type line struct {
	id, kind, reason string
	decimals         uint8
	amount           string
}

// pow returns b^e as a decimal string.
func pow(b, e int64) string { return new(big.Int).Exp(big.NewInt(b), big.NewInt(e), nil).String() }

// usdc returns whole USDC (6 decimals) as raw units.
func usdc(n float64) string { return fmt.Sprint(int64(n * 1e6)) }

// e18 returns whole stablecoin units in the statement's 18-decimal units.
func e18(n float64) string {
	v := new(big.Int).Mul(big.NewInt(int64(n*1e6)), big.NewInt(1e12))
	return v.String()
}

func insertLines(t *testing.T, ch driver.Conn, session string, lines []line) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ledger, err := ch.PrepareBatch(ctx, `INSERT INTO ledger (entry_id, kind, reason, session_id, merchant_id, chain_id, token, symbol,
		decimals, tx_hash, log_index, amount_raw, event_time, recorded_at)`)
	if err != nil {
		t.Fatal(err)
	}
	sweeps, err := ch.PrepareBatch(ctx, `INSERT INTO ledger_sweeps (entry_id, kind, session_id, merchant_id, chain_id, token, symbol,
		decimals, tx_hash, amount_raw, event_time, recorded_at)`)
	if err != nil {
		t.Fatal(err)
	}
	var nsweeps int
	for _, l := range lines {
		if l.kind == "sweep" || l.kind == "sweep_gas" {
			nsweeps++
			err = sweeps.Append(l.id, l.kind, session, "m", uint64(1), "0xtoken", "", l.decimals, "0xtx", l.amount, at, at)
		} else {
			err = ledger.Append(l.id, l.kind, l.reason, session, "m", uint64(1), "0xtoken", "", l.decimals, "0xtx", uint32(0), l.amount, at, at)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := ledger.Send(); err != nil {
		t.Fatal(err)
	}
	if nsweeps > 0 {
		if err := sweeps.Send(); err != nil {
			t.Fatal(err)
		}
	} else {
		_ = sweeps.Abort()
	}
}

// statement runs SessionStatement for one session and returns each
// column by name, as text.
func statement(t *testing.T, ch driver.Conn, session string) (map[string]string, error) {
	t.Helper()
	rows, err := ch.Query(context.Background(), strings.ReplaceAll(SessionStatement, "SESSION_ID", session))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, fmt.Errorf("no row (%v)", rows.Err())
	}
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for i, ct := range types {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	got := make(map[string]string, len(types))
	for i, ct := range types {
		got[ct.Name()] = fmt.Sprint(reflect.ValueOf(dest[i]).Elem().Interface())
	}
	return got, rows.Err()
}

// The session statement against real ClickHouse (18.16 here): each case
// is one session's ledger, and the columns the statement must show.
func TestSessionStatement(t *testing.T) {
	db := dbtest.Migrated(t)
	cases := []struct {
		name  string
		lines []line
		want  map[string]string
	}{{
		name: "paid exactly",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(10)},
			{id: "delivery:a", kind: "delivery", decimals: 6, amount: usdc(10)},
		},
		want: map[string]string{"deposited_e18": e18(10), "delivered_e18": e18(10), "refunded_e18": "0", "held_e18": "0", "variance_e18": "0",
			"in_receiver_e18": e18(10), "wrong_token_transfers": "0"},
	}, {
		name: "overpaid and delivered: the surplus is held",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(12.5)},
			{id: "overpaid:a", kind: "exception", reason: "overpaid", decimals: 6, amount: usdc(2.5)},
			{id: "delivery:a", kind: "delivery", decimals: 6, amount: usdc(10)},
		},
		want: map[string]string{"deposited_e18": e18(12.5), "delivered_e18": e18(10), "refunded_e18": "0", "held_e18": e18(2.5),
			"variance_e18": e18(2.5)},
	}, {
		// The delivery's call reverted: the session bounced and the
		// refund returned every deposit, surplus included, so nothing
		// is held.
		name: "overpaid and bounced: the refund returned the surplus",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(12.5)},
			{id: "overpaid:a", kind: "exception", reason: "overpaid", decimals: 6, amount: usdc(2.5)},
			{id: "refund:a", kind: "refund", decimals: 6, amount: usdc(12.5)},
		},
		want: map[string]string{"deposited_e18": e18(12.5), "delivered_e18": "0", "refunded_e18": e18(12.5), "held_e18": "0",
			"variance_e18": "0"},
	}, {
		// Scheduled but not delivered yet (or reverted, its refund not
		// final): the surplus may still go back with the refund.
		name: "overpaid, delivery not on the ledger yet",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(12.5)},
			{id: "overpaid:a", kind: "exception", reason: "overpaid", decimals: 6, amount: usdc(2.5)},
			{id: "exception:1:b:t6:0", kind: "exception", reason: "late", decimals: 6, amount: usdc(1)},
		},
		want: map[string]string{"deposited_e18": e18(12.5), "delivered_e18": "0", "refunded_e18": "0", "held_e18": e18(1),
			"variance_e18": e18(12.5)},
	}, {
		// A late deposit is held whatever became of the session.
		name: "bounced with a late deposit",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(5)},
			{id: "exception:1:b:t6:0", kind: "exception", reason: "late", decimals: 6, amount: usdc(1)},
			{id: "refund:a", kind: "refund", decimals: 6, amount: usdc(5)},
		},
		want: map[string]string{"deposited_e18": e18(5), "refunded_e18": e18(5), "held_e18": e18(1), "variance_e18": "0"},
	}, {
		// The exceptions inbox: the merchant refunded the late deposit.
		// It leaves held, and paying back what was never deposited is
		// no variance.
		name: "bounced with a late deposit the merchant refunded",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(5)},
			{id: "exception:1:b:t6:0", kind: "exception", reason: "late", decimals: 6, amount: usdc(1)},
			{id: "refund:a", kind: "refund", decimals: 6, amount: usdc(5)},
			{id: "exception_refund:exception:1:b:t6:0", kind: "refund", reason: "exception_refund", decimals: 6, amount: usdc(1)},
		},
		want: map[string]string{"deposited_e18": e18(5), "refunded_e18": e18(6), "held_e18": "0", "variance_e18": "0"},
	}, {
		// The merchant refunded an overpayment's surplus: money that was
		// deposited goes back, so variance closes too.
		name: "overpaid, delivered, surplus refunded",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(12.5)},
			{id: "overpaid:a", kind: "exception", reason: "overpaid", decimals: 6, amount: usdc(2.5)},
			{id: "delivery:a", kind: "delivery", decimals: 6, amount: usdc(10)},
			{id: "exception_refund:overpaid:a", kind: "refund", reason: "exception_refund", decimals: 6, amount: usdc(2.5)},
		},
		want: map[string]string{"deposited_e18": e18(12.5), "delivered_e18": e18(10), "refunded_e18": e18(2.5), "held_e18": "0",
			"variance_e18": "0"},
	}, {
		// The merchant credited a late top-up: it is a deposit now, and
		// the session delivered.
		name: "late top-up credited and delivered",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(4)},
			{id: "exception:1:b:t6:0", kind: "exception", reason: "late", decimals: 6, amount: usdc(6)},
			{id: "deposit:1:b:t6:0", kind: "deposit", reason: "exception_credit", decimals: 6, amount: usdc(6)},
			{id: "delivery:a", kind: "delivery", decimals: 6, amount: usdc(10)},
		},
		want: map[string]string{"deposited_e18": e18(10), "delivered_e18": e18(10), "refunded_e18": "0", "held_e18": "0", "variance_e18": "0"},
	}, {
		// Spam of tokens settle does not accept, with amounts up to
		// 2^256-1: none fits the 18-decimal columns (a wrong token's
		// decimals are unknown, recorded as 0), so they are counted
		// apart, net of the one a reorg removed, and the statement
		// still answers. An exception of an accepted token is held.
		name: "wrong tokens with uint256 amounts",
		lines: []line{
			{id: "deposit:a", kind: "deposit", decimals: 6, amount: usdc(10)},
			{id: "delivery:a", kind: "delivery", decimals: 6, amount: usdc(10)},
			{id: "exception:1:b:t1:0", kind: "exception", reason: "wrong_token", amount: pow(2, 255)},
			{id: "exception:1:b:t2:0", kind: "exception", reason: "wrong_token", amount: new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)).String()},
			{id: "exception:1:b:t3:0", kind: "exception", reason: "wrong_token", amount: pow(2, 100)},
			{id: "exception:1:b:t4:0", kind: "exception", reason: "wrong_token", amount: strings.Repeat("9", 38)},
			{id: "exception:1:b:t5:0", kind: "exception", reason: "wrong_token", amount: pow(10, 30)},
			{id: "unapply:1:b:t5:0", kind: "unapply", reason: "reorg_exception", amount: pow(10, 30)},
			{id: "exception:1:b:t6:0", kind: "exception", reason: "late", decimals: 6, amount: usdc(1)},
		},
		want: map[string]string{"deposited_e18": e18(10), "delivered_e18": e18(10), "held_e18": e18(1), "variance_e18": "0",
			"wrong_token_transfers": "4"},
	}}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			session := fmt.Sprintf("s%d", i)
			insertLines(t, db.CH, session, c.lines)
			got, err := statement(t, db.CH, session)
			if err != nil {
				t.Fatalf("statement: %v", err)
			}
			for col, want := range c.want {
				if got[col] != want {
					t.Errorf("%s = %s, want %s", col, got[col], want)
				}
			}
			if t.Failed() {
				t.Logf("statement: %v", got)
			}
		})
	}
}
