package indexer

import (
	"context"
	"errors"
	"testing"

	"github.com/settle-dev/settle/internal/dbtest"
)

// One indexer per chain: a second one for the same chain waits for the
// first's advisory lock, another chain's does not.
func TestOneIndexerPerChain(t *testing.T) {
	pg := dbtest.Postgres(t)
	ctx := context.Background()
	runner := func(chainID uint64) *Runner {
		return &Runner{cfg: Config{ChainID: chainID}, store: &pgStore{pool: pg, chainID: chainID}}
	}
	a, b, other := runner(5), runner(5), runner(6)
	if err := a.holdLock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.holdLock(ctx); err != nil {
		t.Fatalf("holding the lock again: %v", err)
	}
	if err := b.holdLock(ctx); !errors.Is(err, errChainLocked) {
		t.Fatalf("second indexer of chain 5: %v, want errChainLocked", err)
	}
	if err := other.holdLock(ctx); err != nil {
		t.Fatalf("indexer of chain 6: %v", err)
	}
	a.unlock()
	if err := b.holdLock(ctx); err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	b.unlock()
	other.unlock()
}
