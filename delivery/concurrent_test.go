package delivery

import (
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Two executors working the same payouts at the same time pay each exactly
// once, with ten distinct nonces.
func TestConcurrentExecutorsPayEachOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 10
	ids := make([]int64, n)
	dests := make([]common.Address, n)
	for i := range n {
		dests[i] = randomAddress(t)
		ids[i] = f.addPayout(dests[i], int64(1000*(i+1)), nil)
	}
	executors := make([]*Executor, 2)
	for i := range executors {
		executors[i], _ = f.executor(nil)
	}

	allMined := func() bool {
		var open int
		if err := f.db.PG.QueryRow(f.ctx, `SELECT count(*) FROM payouts WHERE status <> 'mined'`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0
	}
	var total Result
	deadline := time.Now().Add(60 * time.Second)
	for !allMined() {
		if time.Now().After(deadline) {
			t.Fatalf("payouts not all mined within 60s; passes summed to %+v", total)
		}
		results := make([]Result, len(executors))
		var wg sync.WaitGroup
		for i, e := range executors {
			wg.Go(func() {
				res, err := e.RunOnce(f.ctx)
				if err != nil {
					t.Error(err)
				}
				results[i] = res
			})
		}
		wg.Wait()
		for _, r := range results {
			total.add(r)
		}
	}
	if total.Signed != n || total.Mined != n {
		t.Errorf("passes summed to %+v, want %d signed and mined", total, n)
	}
	t.Logf("passes summed to %+v", total)

	nonces := make(map[int64]int64)
	for i, id := range ids {
		p := f.payout(id)
		if prev, dup := nonces[*p.Nonce]; dup {
			t.Errorf("payouts %d and %d share nonce %d", prev, id, *p.Nonce)
		}
		nonces[*p.Nonce] = id
		if got := f.balance(dests[i]); got.Int64() != int64(1000*(i+1)) {
			t.Errorf("destination %d holds %s, want %d", i, got, 1000*(i+1))
		}
	}
	for k := range int64(n) {
		if _, ok := nonces[k]; !ok {
			t.Errorf("nonce %d unused: nonces are %v", k, nonces)
		}
	}
	sent := f.transfersFromTreasury()
	for i, d := range dests {
		if len(sent[d]) != 1 {
			t.Errorf("destination %d got %d transfers, want 1", i, len(sent[d]))
		}
	}
	if len(sent) != n {
		t.Errorf("treasury paid %d addresses, want %d", len(sent), n)
	}
	if got := f.chainNonce(); got != n {
		t.Errorf("treasury nonce on chain %d, want %d", got, n)
	}
	if got := f.storedNonce(); got != n {
		t.Errorf("treasury_nonces.next_nonce %d, want %d", got, n)
	}
}
