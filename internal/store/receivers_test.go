package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

func TestIsReceiver(t *testing.T) {
	ctx := context.Background()
	st := store.New(dbtest.Migrated(t).PG)
	m, err := st.CreateMerchant(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	ss := &session.Session{
		ID: strings.Repeat("ab", 16), MerchantID: m.ID, Status: session.RequiresPaymentMethod,
		Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
			ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC"},
		Display: session.Display{Title: "t", Verb: "Deposit"}, ClientSecret: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}
	if err := st.CreateSession(ctx, ss, 6); err != nil {
		t.Fatal(err)
	}
	const receiver = "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359"
	derive := func(uint32) (string, error) { return receiver, nil }
	if _, _, err := st.SetReceiverPaymentMethod(ctx, ss.ID, "evm", "evm", derive, now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		family, address string
		want            bool
	}{
		{"evm", receiver, true},
		{"evm", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", true}, // checksummed
		{"evm", "0x" + strings.ToUpper(receiver[2:]), true},
		{"tron", receiver, false}, // same string, another family
		{"evm", ss.Destination.Address, false},
	} {
		got, err := st.IsReceiver(ctx, tc.family, tc.address)
		if err != nil || got != tc.want {
			t.Errorf("IsReceiver(%s, %s) = %v, %v; want %v", tc.family, tc.address, got, err, tc.want)
		}
	}
}
