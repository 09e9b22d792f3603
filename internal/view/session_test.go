package view

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/session"
)

// Public and Full are pure functions of the session and the status the
// caller read it at. api/view_test.go checks the same through HTTP for
// every endpoint that returns a session.
func TestSessionViews(t *testing.T) {
	created := time.Unix(1739554073, 0)
	s := &session.Session{
		ID: "0123456789abcdef0123456789abcdef", Status: session.Processing, CreatedAt: created, ExpiresAt: created.Add(time.Hour),
		Destination: session.Destination{Type: "evm", Address: "0x3a321372e8a9755cd2ca6114eb8da32a14f8100b", ChainID: 8453, ChainName: "Base",
			TokenAddress: "0x50c5725949a6f0c72e6c4a641f24049a917db0cb", TokenSymbol: "DAI", AmountUnits: "1"},
		Display:      session.Display{Title: "t", Verb: "v"},
		Metadata:     map[string]string{"k": "v"},
		ClientSecret: "secret",
		PaymentMethod: &session.PaymentMethod{Type: "evm", ReceiverAddress: "0xfbfa6a0d1f44b60d7cca4b95d5a2cfb15246db0d", CreatedAt: created,
			Source: &session.Source{Address: "0xfbfa6a0d1f44b60d7cca4b95d5a2cfb15246db0d", ChainID: 10, TokenAddress: "0x0b2c639c533813f4aa9d7837caf62653d097ff85", TxHash: "0xab"}},
	}
	const dest = `"destination":{"type":"evm","address":"0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b","chainId":8453,"chainName":"Base","tokenAddress":"0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb","tokenSymbol":"DAI","amountUnits":"1"}`
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"public", Public(s, session.Processing), `{"sessionId":"0123456789abcdef0123456789abcdef","status":"processing",` + dest},
		{"status is the caller's", Public(s, session.Expired), `{"sessionId":"0123456789abcdef0123456789abcdef","status":"expired",` + dest},
		{"full", Full(s, session.Processing), `{"sessionId":"0123456789abcdef0123456789abcdef","status":"processing",` + dest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) < len(tt.want) || string(got[:len(tt.want)]) != tt.want {
				t.Errorf("got\n%s\nwant prefix\n%s", got, tt.want)
			}
		})
	}
	full := Full(s, session.Processing)
	if full.Metadata["k"] != "v" || full.ClientSecret != "secret" {
		t.Errorf("full view lost metadata or client secret: %+v", full)
	}
	pm := Public(s, session.Processing).PaymentMethod
	if pm.ReceiverAddress != "0xFBfa6A0D1F44b60d7CCA4b95d5a2CfB15246DB0D" || pm.Source.TokenAddress != "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85" {
		t.Errorf("payment method addresses not EIP-55: %+v %+v", pm, pm.Source)
	}
	if s.PaymentMethod.Source.Address != "0xfbfa6a0d1f44b60d7cca4b95d5a2cfb15246db0d" {
		t.Error("the view changed the session's stored source")
	}
}

func TestAddressOut(t *testing.T) {
	for _, tt := range []struct {
		evm      bool
		in, want string
	}{
		{true, "0x3a321372e8a9755cd2ca6114eb8da32a14f8100b", "0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b"},
		{true, "0x3A321372E8A9755CD2CA6114EB8DA32A14F8100B", "0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b"},
		{true, "", ""},
		{true, "not an address", "not an address"},
		{false, "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ", "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ"},
	} {
		if got := AddressOut(tt.evm, tt.in); got != tt.want {
			t.Errorf("AddressOut(%v, %q) = %q, want %q", tt.evm, tt.in, got, tt.want)
		}
	}
}
