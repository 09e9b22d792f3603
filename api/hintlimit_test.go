package api

import (
	"fmt"
	"testing"
	"time"
)

// The limiter keeps state only for sessions whose budget is not full again:
// a check on many sessions does not grow the map for good.
func TestHintLimiterForgetsRefilledSessions(t *testing.T) {
	l := newHintLimiter(5*time.Second, 3)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 100 {
		if !l.allow(fmt.Sprint(i), t0) {
			t.Fatalf("session %d: first lookup refused", i)
		}
	}
	// The first lookup above took one of the burst of 3.
	for i, want := range []bool{true, true, false} {
		if got := l.allow("0", t0); got != want {
			t.Fatalf("session 0, lookup %d of the burst: allowed %v, want %v", i+2, got, want)
		}
	}
	// Ten seconds on, session 0 has two lookups again and takes one.
	if !l.allow("0", t0.Add(10*time.Second)) {
		t.Fatal("session 0 after two intervals: want a lookup")
	}
	// At the burst's length (15s) the map is swept: the others are full
	// again and forgotten; session 0 (two of three) is kept.
	if !l.allow("0", t0.Add(15*time.Second)) {
		t.Fatal("session 0 at 15s: want a lookup")
	}
	if n := len(l.bySession); n != 1 {
		t.Errorf("%d sessions kept after the others refilled, want 1", n)
	}
	// A forgotten session starts again with a full budget, as it would
	// have had anyway.
	for i := range 3 {
		if !l.allow("1", t0.Add(15*time.Second)) {
			t.Fatalf("session 1, lookup %d after being forgotten: refused", i+1)
		}
	}
}
