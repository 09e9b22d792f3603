package view

import (
	"encoding/json"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/chain"
)

// ExceptionOf is a pure function of the ledger entry: one row per shape a
// merchant can see (open, each resolution, a payment's, a base58 chain's).
func TestExceptionOf(t *testing.T) {
	at := time.Unix(1739554073, 0)
	base := func() LedgerEntry {
		return LedgerEntry{
			ID: 42, Reason: "wrong_token", SessionID: "0123456789abcdef0123456789abcdef", ChainID: 8453,
			Token: "0x50c5725949a6f0c72e6c4a641f24049a917db0cb", Symbol: "DAI", Decimals: 6,
			From: "0xfbfa6a0d1f44b60d7cca4b95d5a2cfb15246db0d", To: "0x3a321372e8a9755cd2ca6114eb8da32a14f8100b",
			TxHash: "0xf975e462c8191d18ef970579814ebf68c83c45b4fa8984184f744f739285133b", LogIndex: 3, BlockNumber: 123,
			Amount: big.NewInt(1500000), RecordedAt: at,
		}
	}
	const (
		head = `{"id":"exc_42","reason":"%s","status":"%s","sessionId":"0123456789abcdef0123456789abcdef","paymentId":%s,"chainId":"8453",` +
			`"tokenAddress":"0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb","tokenSymbol":"DAI","amountUnits":"1.5","amountRaw":"1500000",` +
			`"from":"0xFBfa6A0D1F44b60d7CCA4b95d5a2CfB15246DB0D","to":"0x3a321372E8a9755cD2CA6114eB8dA32A14F8100b",` +
			`"txHash":"0xf975e462c8191d18ef970579814ebf68c83c45b4fa8984184f744f739285133b","logIndex":3,"blockNumber":"123","createdAt":"1739554073",`
	)
	f := func(reason, status, payment, resolution string) string {
		return fmt.Sprintf(head, reason, status, payment) + `"resolution":` + resolution + `}`
	}
	with := func(mod func(*LedgerEntry)) LedgerEntry { e := base(); mod(&e); return e }
	tests := []struct {
		name string
		e    LedgerEntry
		want string
	}{
		{"open", base(), f("wrong_token", "open", "null", "null")},
		{"payment", with(func(e *LedgerEntry) { e.PaymentID = "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ"; e.Reason = "late" }),
			f("late", "open", `"7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ"`, "null")},
		{"refunded", with(func(e *LedgerEntry) {
			e.Resolution = &Resolution{Action: "refund", Note: "sent back", TxHash: "0xabc", At: at.Add(time.Minute)}
		}), f("wrong_token", "refunded", "null", `{"action":"refund","note":"sent back","txHash":"0xabc","at":"1739554133"}`)},
		{"credited", with(func(e *LedgerEntry) { e.Reason = "late"; e.Resolution = &Resolution{Action: "credit", At: at} }),
			f("late", "credited", "null", `{"action":"credit","note":"","txHash":null,"at":"1739554073"}`)},
		{"resolved", with(func(e *LedgerEntry) {
			e.Reason = "overpaid"
			e.Resolution = &Resolution{Action: "resolve", Note: "kept as tip", At: at}
		}), f("overpaid", "resolved", "null", `{"action":"resolve","note":"kept as tip","txHash":null,"at":"1739554073"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(ExceptionOf(tt.e))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}

	t.Run("base58 addresses unchanged, whole amounts, nil amount", func(t *testing.T) {
		e := base()
		e.ChainID, e.Token, e.From, e.To = chain.SolanaChainID, "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
			"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", "7Tt3HUMmU83PPvd2djwcsHSZ8upMNW4sTL7a8eFQhWiQ"
		e.Amount = big.NewInt(2000000)
		v := ExceptionOf(e)
		if v.TokenAddress != e.Token || v.From != e.From || v.To != e.To || v.ChainID != "501" {
			t.Errorf("solana exception changed addresses: %+v", v)
		}
		if v.AmountUnits != "2" || v.AmountRaw != "2000000" {
			t.Errorf("amount %s / %s, want 2 / 2000000", v.AmountUnits, v.AmountRaw)
		}
		e.Amount = nil
		if v := ExceptionOf(e); v.AmountUnits != "0" || v.AmountRaw != "0" {
			t.Errorf("nil amount: %s / %s, want 0 / 0", v.AmountUnits, v.AmountRaw)
		}
	})
}
