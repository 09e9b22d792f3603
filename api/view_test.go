package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// Every EVM address leaves the API EIP-55 encoded, whatever case the
// merchant sent and whatever case settle stores: the published client's
// types say "checksum encoded" and key their token table by the checksummed
// address. Non-EVM addresses (base58) are case-sensitive and come back as
// they are.
func TestViewAddressesChecksummed(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	const payer = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" // anvil account 1, EIP-55
	upper := func(a string) string { return "0x" + strings.ToUpper(a[2:]) }
	for name, addr := range map[string]string{"lowercase": strings.ToLower(payee), "uppercase": upper(payee)} {
		t.Run(name, func(t *testing.T) {
			body := set(set(validCreate(), "destination.address", addr), "destination.tokenAddress", strings.ToLower(baseUSDC))
			body = set(body, "refundAddress", strings.ToLower(payer))
			created := b.do("POST", "/v1/sessions", body, b.bearer(b.key)...)
			if created.Status != 201 {
				t.Fatalf("create: %d %s", created.Status, created.Raw)
			}
			s := created.Body["session"].(map[string]any)
			id, secret := s["sessionId"].(string), s["clientSecret"].(string)
			wantDest := func(what string, s map[string]any) {
				t.Helper()
				d := s["destination"].(map[string]any)
				if d["address"] != payee || d["tokenAddress"] != baseUSDC {
					t.Errorf("%s: destination address %v, tokenAddress %v; want %s, %s (EIP-55)", what, d["address"], d["tokenAddress"], payee, baseUSDC)
				}
			}
			wantDest("POST /v1/sessions", s)

			pm := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
			if pm.Status != 200 {
				t.Fatalf("payment method: %d %s", pm.Status, pm.Raw)
			}
			wantDest("POST paymentMethods", pm.Body["session"].(map[string]any))

			// The reconciler stores the detected source in lowercase, as
			// it reads it from the chain.
			src, _ := json.Marshal(map[string]any{
				"address": strings.ToLower(payer), "chainId": 8453, "chainName": "Base",
				"tokenAddress": strings.ToLower(baseUSDC), "tokenSymbol": "USDC", "sentUnits": "10",
				"txHash": "0x" + strings.Repeat("ab", 32),
			})
			if _, err := b.db.PG.Exec(ctx, `UPDATE payment_methods SET source = $2 WHERE session_id = $1`, id, src); err != nil {
				t.Fatal(err)
			}
			for what, r := range map[string]response{
				"GET full":          b.do("GET", "/v1/sessions/"+id, nil, b.bearer(b.key)...),
				"GET public":        b.do("GET", "/v1/sessions/"+id, nil),
				"GET client secret": b.do("GET", "/v1/sessions/"+id+"?clientSecret="+secret, nil),
				"PUT check":         b.do("PUT", "/v1/sessions/"+id+"/check", map[string]any{"clientSecret": secret}),
			} {
				if r.Status != 200 {
					t.Fatalf("%s: %d %s", what, r.Status, r.Raw)
				}
				s := r.Body["session"].(map[string]any)
				wantDest(what, s)
				m := s["paymentMethod"].(map[string]any)
				if ra := m["receiverAddress"].(string); ra == strings.ToLower(ra) {
					t.Errorf("%s: receiverAddress %s is not EIP-55", what, ra)
				}
				got := m["source"].(map[string]any)
				if got["address"] != payer || got["tokenAddress"] != baseUSDC {
					t.Errorf("%s: source address %v, tokenAddress %v; want %s, %s (EIP-55)", what, got["address"], got["tokenAddress"], payer, baseUSDC)
				}
				if got["txHash"] != "0x"+strings.Repeat("ab", 32) {
					t.Errorf("%s: source txHash %v changed; only addresses are checksummed", what, got["txHash"])
				}
			}
		})
	}

	t.Run("solana destination unchanged", func(t *testing.T) {
		body := map[string]any{
			"destination": map[string]any{"type": "solana", "address": solanaPayee, "tokenAddress": solanaUSDC, "amountUnits": "10.00"},
			"display":     map[string]any{"title": "t", "verb": "v"},
		}
		created := b.do("POST", "/v1/sessions", body, b.bearer(b.key)...)
		if created.Status != 201 {
			t.Fatalf("create: %d %s", created.Status, created.Raw)
		}
		id := created.Body["session"].(map[string]any)["sessionId"].(string)
		for what, r := range map[string]response{"POST": created, "GET": b.do("GET", "/v1/sessions/"+id, nil)} {
			d := r.Body["session"].(map[string]any)["destination"].(map[string]any)
			if d["address"] != solanaPayee || d["tokenAddress"] != solanaUSDC {
				t.Errorf("%s: solana destination %v / %v, want %s / %s unchanged", what, d["address"], d["tokenAddress"], solanaPayee, solanaUSDC)
			}
		}
	})
}
