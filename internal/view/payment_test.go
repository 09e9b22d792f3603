package view

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/session"
)

// PaymentOf is a pure function of the session: one row per lifecycle
// point a payer or a merchant can see.
func TestPaymentView(t *testing.T) {
	created := time.Unix(1739554073, 0)
	base := func(status session.Status) *session.Session {
		return &session.Session{
			ID: "0123456789abcdef0123456789abcdef", Status: status, CreatedAt: created, ExpiresAt: created.Add(time.Hour),
			Destination: session.Destination{Type: "evm", Address: "0x3a321372e8a9755cd2ca6114eb8da32a14f8100b", ChainID: 8453,
				TokenAddress: "0x50c5725949a6f0c72e6c4a641f24049a917db0cb", TokenSymbol: "DAI", AmountUnits: "1"},
			Metadata: map[string]string{"mySystemId": "123"},
			Payment:  &session.Payment{ID: "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ", ExternalID: "123", Checkout: session.Checkout{Intent: "Pay Daimoo"}},
		}
	}
	paid := func(s *session.Session) *session.Session {
		s.PaymentMethod = &session.PaymentMethod{Type: "evm", Source: &session.Source{
			Address: "0xfbfa6a0d1f44b60d7cca4b95d5a2cfb15246db0d", ChainID: 10, ChainName: "Optimism",
			TokenAddress: "0x0b2c639c533813f4aa9d7837caf62653d097ff85", TokenSymbol: "USDC", SentUnits: "1.00",
			TxHash: "0xf975e462c8191d18ef970579814ebf68c83c45b4fa8984184f744f739285133b"}}
		return s
	}
	delivered := func(s *session.Session) *session.Session {
		s.Destination.Delivery = &session.Delivery{TxHash: "0x8316f2dd90051333a6f879d7b15cacdf960535e56476a5300ad90c14377fa347", ReceivedUnits: "1"}
		return s
	}
	const (
		head   = `{"id":"7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ","status":"%s","createdAt":"1739554073","display":{"intent":"Pay Daimoo","paymentValue":"1.00","currency":"USD"},`
		source = `"source":{"payerAddress":"0xFBfa6A0D1F44b60d7CCA4b95d5a2CfB15246DB0D","txHash":"0xf975e462c8191d18ef970579814ebf68c83c45b4fa8984184f744f739285133b","chainId":"10","amountUnits":"1.00","tokenSymbol":"USDC","tokenAddress":"0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85"},`
		dest   = `"destination":{"destinationAddress":"0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b","txHash":%s,"chainId":"8453","amountUnits":"1","tokenSymbol":"DAI","tokenAddress":"0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb","calldata":"0x"},`
		tail   = `"externalId":"123","metadata":{"mySystemId":"123"}}`
		txHash = `"0x8316f2dd90051333a6f879d7b15cacdf960535e56476a5300ad90c14377fa347"`
	)
	f := fmt.Sprintf
	tests := []struct {
		name string
		s    *session.Session
		now  time.Time
		want string
	}{
		{"created", base(session.RequiresPaymentMethod), created, f(head, "payment_unpaid") + `"source":null,` + f(dest, "null") + tail},
		{"waiting", base(session.WaitingPayment), created, f(head, "payment_unpaid") + `"source":null,` + f(dest, "null") + tail},
		{"past the deadline reads unpaid", base(session.WaitingPayment), created.Add(2 * time.Hour), f(head, "payment_unpaid") + `"source":null,` + f(dest, "null") + tail},
		{"expired", base(session.Expired), created, f(head, "payment_unpaid") + `"source":null,` + f(dest, "null") + tail},
		{"deposit seen", paid(base(session.Processing)), created, f(head, "payment_started") + source + f(dest, "null") + tail},
		{"delivered", delivered(paid(base(session.Succeeded))), created, f(head, "payment_completed") + source + f(dest, txHash) + tail},
		// The refund is not a payment of the destination.
		{"bounced", delivered(paid(base(session.Bounced))), created, f(head, "payment_bounced") + source + f(dest, "null") + tail},
		{"no externalId, no metadata, calldata", func() *session.Session {
			s := base(session.WaitingPayment)
			s.Payment.ExternalID, s.Metadata, s.Destination.Calldata = "", nil, "0xabcd"
			return s
		}(), created, f(head, "payment_unpaid") + `"source":null,` +
			`"destination":{"destinationAddress":"0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b","txHash":null,"chainId":"8453","amountUnits":"1","tokenSymbol":"DAI","tokenAddress":"0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb","calldata":"0xabcd"},` +
			`"externalId":null,"metadata":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(PaymentOf(tt.s, tt.now))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestUSDValue(t *testing.T) {
	for in, want := range map[string]string{"1": "1.00", "1.5": "1.50", "1.00": "1.00", "1.234567": "1.234567", "0.1": "0.10", "10.500": "10.50", "": ""} {
		if got := USDValue(in); got != want {
			t.Errorf("USDValue(%q) = %q, want %q", in, got, want)
		}
	}
}
