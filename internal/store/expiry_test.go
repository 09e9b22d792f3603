package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// A session with a receiver is known to have expired only once every
// configured chain's reconciler has attributed FINAL blocks stamped at or
// after its deadline: an unfinal tip past the deadline can still be
// reorged into one carrying an in-time deposit, a configured chain with
// no cursor yet may hold one, and a chain no longer configured says
// nothing either way.
func TestExpiryOnFinalDataOfConfiguredChains(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Migrated(t)
	st := store.New(db.PG).ExpectChains(1, 10)
	m, err := st.CreateMerchant(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	deadline := now.Add(time.Hour)
	n := 0
	newSession := func() string {
		n++
		ss := &session.Session{
			ID: strings.Repeat(fmt.Sprintf("%02x", n), 16), MerchantID: m.ID, Status: session.RequiresPaymentMethod,
			Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 10,
				ChainName: "Optimism", TokenAddress: "0x0b2c639c533813f4aa9d7837caf62653d097ff85", TokenSymbol: "USDC"},
			Display: session.Display{Title: "t", Verb: "Deposit"}, ClientSecret: "s", CreatedAt: now, ExpiresAt: deadline,
		}
		if err := st.CreateSession(ctx, ss, 6); err != nil {
			t.Fatal(err)
		}
		derive := func(i uint32) (string, error) { return fmt.Sprintf("0x%040x", 0xbeef00+i), nil }
		if _, _, err := st.SetReceiverPaymentMethod(ctx, ss.ID, "evm", "evm", derive, now); err != nil {
			t.Fatal(err)
		}
		return ss.ID
	}
	cursor := func(chainID int64, tip, final time.Time) {
		t.Helper()
		const q = `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time, final_number, final_block_time) VALUES ($1, 10, '0x0a', $2, 7, $3)
			ON CONFLICT (chain_id) DO UPDATE SET block_time = excluded.block_time, final_block_time = excluded.final_block_time`
		if _, err := db.PG.Exec(ctx, q, chainID, tip, final); err != nil {
			t.Fatal(err)
		}
	}
	read := func(id string) session.Status {
		t.Helper()
		ss, err := st.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ss.StatusAt(deadline.Add(2 * time.Hour))
	}
	id := newSession()
	later := deadline.Add(2 * time.Hour)

	// Chain 1 is past the deadline, final too; chain 10 has no cursor yet.
	cursor(1, deadline.Add(time.Minute), deadline.Add(time.Second))
	if got := read(id); got != session.WaitingPayment {
		t.Errorf("configured chain 10 has not reconciled anything: status %s, want waiting_payment", got)
	}
	if n, err := st.ExpireDue(ctx, later, 10); err != nil || n != 0 {
		t.Errorf("ExpireDue = %d, %v; want 0 while chain 10 has no cursor", n, err)
	}

	// Chain 10's tip is past the deadline, but its final blocks are not.
	cursor(10, deadline.Add(time.Minute), deadline.Add(-time.Second))
	if got := read(id); got != session.WaitingPayment {
		t.Errorf("chain 10 final only up to before the deadline: status %s, want waiting_payment", got)
	}
	if n, err := st.ExpireDue(ctx, later, 10); err != nil || n != 0 {
		t.Errorf("ExpireDue = %d, %v; want 0 while chain 10's final blocks are before the deadline", n, err)
	}

	// A chain no longer configured, stuck long ago, changes nothing.
	cursor(8453, now.Add(-24*time.Hour), now.Add(-24*time.Hour))
	cursor(10, deadline.Add(time.Minute), deadline)
	if got := read(id); got != session.Expired {
		t.Errorf("every configured chain final through the deadline: status %s, want expired", got)
	}
	if n, err := st.ExpireDue(ctx, later, 10); err != nil || n != 1 {
		t.Errorf("ExpireDue = %d, %v; want 1", n, err)
	}

	// Without any configured chain nothing can be paid into a receiver:
	// the deadline alone decides.
	bare := store.New(db.PG)
	other := newSession()
	if ss, err := bare.GetSession(ctx, other); err != nil || ss.StatusAt(later) != session.Expired {
		t.Errorf("no chains configured: %v, %v; want expired", ss.StatusAt(later), err)
	}
}
