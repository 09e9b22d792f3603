package schema_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/settle-dev/settle/internal/dbtest"
)

// 0012 turns the outbox rows written before it into events: renamed
// types, a payment's rows under its payment id (those without a Payments
// API type dropped), sequences per subject in the original order, a body
// around the old stub, and the counters RecordEvent continues from.
func TestEventsBackfill(t *testing.T) {
	db := dbtest.Migrated(t)
	ctx := context.Background()
	if err := applyFiles(t, db.PG, 12, ".down.sql"); err != nil {
		t.Fatalf("rolling back 0012 and later: %v", err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.PG.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	const sid, pid = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	const paymentID = "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ"
	exec(`INSERT INTO merchants (id, name) VALUES ('m', 'M')`)
	for _, q := range []string{
		`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name, dest_token_address,
			dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at)
			VALUES ('` + sid + `', 'm', 'processing', 'evm', '0xb', 1, 'c', '0xt', 'T', 6, '{}', 's', now(), now() + interval '1 hour')`,
		`INSERT INTO sessions (id, merchant_id, status, dest_type, dest_address, dest_chain_id, dest_chain_name, dest_token_address,
			dest_token_symbol, dest_token_decimals, display, client_secret, created_at, expires_at, payment_id)
			VALUES ('` + pid + `', 'm', 'processing', 'evm', '0xb', 1, 'c', '0xt', 'T', 6, '{}', 's', now(), now() + interval '1 hour', '` + paymentID + `')`,
	} {
		exec(q)
	}
	for _, r := range [][2]string{{sid, "session.created"}, {pid, "session.created"}, {sid, "session.payment_method_set"},
		{pid, "session.payment_method_set"}, {pid, "session.processing"}, {sid, "session.processing"}} {
		exec(fmt.Sprintf(`INSERT INTO outbox (merchant_id, topic, subject_id, payload, created_at)
			VALUES ('m', '%s', '%s', jsonb_build_object('sessionId', '%[2]s', 'status', 'x'), '2026-01-02T03:04:05Z')`, r[1], r[0]))
	}
	if err := applyFiles(t, db.PG, 12, ".up.sql"); err != nil {
		t.Fatalf("migrating 0012 and later up: %v", err)
	}

	rows, err := db.PG.Query(ctx, `SELECT event_id, topic, subject_id, sequence, is_test, delivered_at IS NOT NULL, payload FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type ev struct {
		topic, subject string
		seq            int64
	}
	var got []ev
	for rows.Next() {
		var id string
		var e ev
		var test, fanned bool
		var raw []byte
		if err := rows.Scan(&id, &e.topic, &e.subject, &e.seq, &test, &fanned, &raw); err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatal(err)
		}
		if body["id"] != id || body["type"] != e.topic || body["sequence"] != float64(e.seq) || body["createdAt"] != "1767323045" ||
			body["isTestEvent"] != false || test || !fanned {
			t.Errorf("event %s: body %v, test %v, fanned out %v", id, body, test, fanned)
		}
		if obj, _ := body["data"].(map[string]any)["object"].(map[string]any); obj == nil {
			t.Errorf("event %s: no data.object in %v", id, body)
		}
		got = append(got, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []ev{{"session.created", sid, 1}, {"session.waiting_payment", sid, 2}, {"payment_started", paymentID, 1}, {"session.processing", sid, 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events after 0012\n%v\nwant\n%v", got, want)
	}
	var seqS, seqP int64
	if err := db.PG.QueryRow(ctx, `SELECT (SELECT event_seq FROM sessions WHERE id = $1), (SELECT event_seq FROM sessions WHERE id = $2)`, sid, pid).Scan(&seqS, &seqP); err != nil {
		t.Fatal(err)
	}
	if seqS != 3 || seqP != 1 {
		t.Errorf("event_seq %d and %d, want 3 and 1: the next event must continue the subject's numbering", seqS, seqP)
	}
}
