package api_test

import (
	"context"
	"strings"
	"sync"
	"testing"
)

func TestIdempotencyKeyReplays(t *testing.T) {
	b := setup(t)
	idem := func(key string, h ...string) []string { return append([]string{"Idempotency-Key", key}, h...) }
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := b.db.PG.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		name  string
		path  string
		body  map[string]any
		auth  []string
		other map[string]any // a different body
		want  int
	}{
		{"sessions", "/v1/sessions", validCreate(), b.bearer(b.key), set(validCreate(), "metadata.orderId", "124"), 201},
		{"payments", "/api/payment", set(validPayment(), "externalId", del), b.apiKey(b.key), set(set(validPayment(), "externalId", del), "destination.amountUnits", "2"), 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := count(`SELECT count(*) FROM sessions`)
			first := b.do("POST", c.path, c.body, idem("k-"+c.name, c.auth...)...)
			if first.Status != c.want {
				t.Fatalf("first: %d %s", first.Status, first.Raw)
			}
			again := b.do("POST", c.path, c.body, idem("k-"+c.name, c.auth...)...)
			if again.Status != c.want || again.Raw != first.Raw || again.Header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("replay = %d %q (replayed %q), want the first response byte for byte: %s", again.Status, again.Raw, again.Header.Get("Idempotent-Replayed"), first.Raw)
			}
			if again.Header.Get("Content-Type") != "application/json" {
				t.Errorf("replay Content-Type = %q", again.Header.Get("Content-Type"))
			}
			if n := count(`SELECT count(*) FROM sessions`) - before; n != 1 {
				t.Errorf("%d sessions made, want 1", n)
			}
			diff := b.do("POST", c.path, c.other, idem("k-"+c.name, c.auth...)...)
			if typ, code, param := errorOf(t, diff); diff.Status != 400 || typ != "idempotency_error" || code != "idempotency_key_reused" || param != "Idempotency-Key" {
				t.Errorf("other body with the key = %d %s", diff.Status, diff.Raw)
			}
			// The key is the merchant's: merchant B's request with it is
			// its own.
			authB := map[string][]string{"sessions": b.bearer(b.keyB), "payments": b.apiKey(b.keyB)}[c.name]
			otherMerchant := b.do("POST", c.path, c.body, idem("k-"+c.name, authB...)...)
			if otherMerchant.Status != c.want || otherMerchant.Raw == first.Raw {
				t.Errorf("merchant B with A's key = %d %s, want its own new object", otherMerchant.Status, otherMerchant.Raw)
			}
			// Without the header nothing is replayed.
			if plain := b.do("POST", c.path, c.body, c.auth...); plain.Status != c.want || plain.Raw == first.Raw {
				t.Errorf("without a key = %d %s, want a new object", plain.Status, plain.Raw)
			}
		})
	}

	t.Run("validation errors are stored, auth errors are not", func(t *testing.T) {
		bad := set(validCreate(), "destination.chainId", 1)
		r1 := b.do("POST", "/v1/sessions", bad, idem("bad", b.bearer(b.key)...)...)
		r2 := b.do("POST", "/v1/sessions", bad, idem("bad", b.bearer(b.key)...)...)
		if r1.Status != 400 || r2.Raw != r1.Raw || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("validation error replay: %d %s / %s", r1.Status, r1.Raw, r2.Raw)
		}
		unauth := b.do("POST", "/v1/sessions", validCreate(), idem("auth", b.bearer("settle_sk_wrong")...)...)
		if unauth.Status != 401 {
			t.Fatalf("wrong key: %d", unauth.Status)
		}
		if n := count(`SELECT count(*) FROM idempotency_keys WHERE key = 'auth'`); n != 0 {
			t.Errorf("a 401 was stored under its key (%d rows)", n)
		}
	})

	t.Run("payment methods", func(t *testing.T) {
		id, secret := b.create(b.key)
		body := map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}}
		p1 := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", body, idem("pm")...)
		p2 := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", body, idem("pm")...)
		if p1.Status != 200 || p2.Raw != p1.Raw || p2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("payment method replay: %d %s / %s", p1.Status, p1.Raw, p2.Raw)
		}
		// Someone without the secret cannot read the stored answer: their
		// body differs.
		stranger := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": "guess", "paymentMethod": map[string]any{"type": "evm"}}, idem("pm")...)
		if stranger.Status != 400 || strings.Contains(stranger.Raw, "receiverAddress") {
			t.Errorf("stranger with the key = %d %s", stranger.Status, stranger.Raw)
		}
	})

	t.Run("a key is forgotten after 24 hours", func(t *testing.T) {
		r1 := b.do("POST", "/v1/sessions", validCreate(), idem("old", b.bearer(b.key)...)...)
		if _, err := b.db.PG.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'`); err != nil {
			t.Fatal(err)
		}
		r2 := b.do("POST", "/v1/sessions", set(validCreate(), "metadata.orderId", "x"), idem("old", b.bearer(b.key)...)...)
		if r1.Status != 201 || r2.Status != 201 || r2.Raw == r1.Raw {
			t.Fatalf("reuse after 24h: %d %s / %d %s", r1.Status, r1.Raw, r2.Status, r2.Raw)
		}
		if _, err := b.db.PG.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'bad'`); err != nil {
			t.Fatal(err)
		}
		if n, err := b.store.PruneIdempotencyKeys(context.Background()); err != nil || n != 1 {
			t.Errorf("prune = %d, %v; want 1 (only the expired key)", n, err)
		}
	})

	t.Run("malformed key", func(t *testing.T) {
		for _, k := range []string{strings.Repeat("k", 256), "tab\there"} {
			r := b.do("POST", "/v1/sessions", validCreate(), idem(k, b.bearer(b.key)...)...)
			if typ, code, _ := errorOf(t, r); r.Status != 400 || typ != "idempotency_error" || code != "invalid_idempotency_key" {
				t.Errorf("key %q: %d %s", k, r.Status, r.Raw)
			}
		}
	})
}

// Concurrent requests with one key: one effect, and every answer is the
// first one.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	b := setup(t)
	const n = 20
	for _, c := range []struct {
		path string
		body map[string]any
		auth []string
	}{
		{"/v1/sessions", validCreate(), b.bearer(b.key)},
		{"/api/payment", set(validPayment(), "externalId", del), b.apiKey(b.key)},
	} {
		t.Run(c.path, func(t *testing.T) {
			var before int
			ctx := context.Background()
			_ = b.db.PG.QueryRow(ctx, `SELECT count(*) FROM sessions`).Scan(&before)
			var wg sync.WaitGroup
			raws := make([]string, n)
			statuses := make([]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := b.do("POST", c.path, c.body, append([]string{"Idempotency-Key", "same" + c.path}, c.auth...)...)
					raws[i], statuses[i] = r.Raw, r.Status
				}()
			}
			wg.Wait()
			for i := range n {
				if statuses[i] >= 300 || raws[i] != raws[0] {
					t.Fatalf("request %d: %d %s, want %s", i, statuses[i], raws[i], raws[0])
				}
			}
			var after int
			_ = b.db.PG.QueryRow(ctx, `SELECT count(*) FROM sessions`).Scan(&after)
			if after-before != 1 {
				t.Errorf("%d sessions made by %d requests with one key, want 1", after-before, n)
			}
		})
	}
}
