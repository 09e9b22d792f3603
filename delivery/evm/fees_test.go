package evm

import (
	"math/big"
	"testing"
)

func gwei(x int64) *big.Int { return new(big.Int).Mul(big.NewInt(x), big.NewInt(1e9)) }

func TestBumpFees(t *testing.T) {
	for _, c := range []struct {
		name          string
		old, now      fees
		wantTip, wCap *big.Int
	}{
		{"quiet chain: +25% each", fees{gwei(2), gwei(22)}, fees{gwei(1), gwei(11)}, big.NewInt(2_500_000_000), big.NewInt(27_500_000_000)},
		{"rounds up", fees{big.NewInt(3), big.NewInt(7)}, fees{big.NewInt(1), big.NewInt(1)}, big.NewInt(4), big.NewInt(9)},
		{"zero tip still rises", fees{big.NewInt(0), big.NewInt(1)}, fees{big.NewInt(0), big.NewInt(1)}, big.NewInt(1), big.NewInt(2)},
		{"base fee rose: follow the market", fees{gwei(1), gwei(21)}, fees{gwei(3), gwei(103)}, gwei(3), gwei(103)},
		{"tip rose above the cap's room", fees{gwei(1), gwei(21)}, fees{gwei(10), gwei(30)}, gwei(10), gwei(30)},
	} {
		got := bumpFees(c.old, c.now)
		if got.tip.Cmp(c.wantTip) != 0 || got.cap.Cmp(c.wCap) != 0 {
			t.Errorf("%s: bumpFees = tip %s cap %s, want %s %s", c.name, got.tip, got.cap, c.wantTip, c.wCap)
		}
		if got.cap.Cmp(got.tip) < 0 {
			t.Errorf("%s: cap %s below tip %s", c.name, got.cap, got.tip)
		}
	}
}

func TestClamp(t *testing.T) {
	for _, c := range []struct {
		name          string
		in            fees
		ceiling       *big.Int
		wantTip, wCap *big.Int
	}{
		{"below the ceiling: unchanged", fees{gwei(1), gwei(50)}, gwei(200), gwei(1), gwei(50)},
		{"at the ceiling: unchanged", fees{gwei(1), gwei(200)}, gwei(200), gwei(1), gwei(200)},
		{"above: cap lowered, tip kept", fees{gwei(2), gwei(300)}, gwei(200), gwei(2), gwei(200)},
		{"tip above the ceiling: tip lowered to the cap", fees{gwei(250), gwei(300)}, gwei(200), gwei(200), gwei(200)},
		{"no ceiling", fees{gwei(2), gwei(9000)}, nil, gwei(2), gwei(9000)},
	} {
		got := clamp(c.in, c.ceiling)
		if got.tip.Cmp(c.wantTip) != 0 || got.cap.Cmp(c.wCap) != 0 {
			t.Errorf("%s: clamp = tip %s cap %s, want %s %s", c.name, got.tip, got.cap, c.wantTip, c.wCap)
		}
		if c.ceiling != nil && got.cap.Cmp(c.ceiling) > 0 {
			t.Errorf("%s: cap %s above the ceiling %s", c.name, got.cap, c.ceiling)
		}
	}
	// clamp must not alias the ceiling: a later change to the fees of one
	// transaction cannot move the chain's ceiling.
	ceiling := gwei(200)
	got := clamp(fees{gwei(1), gwei(300)}, ceiling)
	got.cap.SetInt64(1)
	if ceiling.Cmp(gwei(200)) != 0 {
		t.Errorf("ceiling changed to %s through clamp's result", ceiling)
	}
}

func TestReplaces(t *testing.T) {
	for _, c := range []struct {
		name     string
		new, old fees
		want     bool
	}{
		{"+25% each", fees{big.NewInt(125), big.NewInt(1250)}, fees{big.NewInt(100), big.NewInt(1000)}, true},
		{"exactly +10% each", fees{big.NewInt(110), big.NewInt(1100)}, fees{big.NewInt(100), big.NewInt(1000)}, true},
		{"tip +9%", fees{big.NewInt(109), big.NewInt(1100)}, fees{big.NewInt(100), big.NewInt(1000)}, false},
		{"cap +9%", fees{big.NewInt(110), big.NewInt(1099)}, fees{big.NewInt(100), big.NewInt(1000)}, false},
		{"10% rounds up: 1.1 of 1 needs 2", fees{big.NewInt(1), big.NewInt(2)}, fees{big.NewInt(1), big.NewInt(1)}, false},
		{"zero tip may stay zero, cap must rise", fees{big.NewInt(0), big.NewInt(2)}, fees{big.NewInt(0), big.NewInt(1)}, true},
		{"same fees", fees{big.NewInt(0), big.NewInt(1)}, fees{big.NewInt(0), big.NewInt(1)}, false},
	} {
		if got := replaces(c.new, c.old); got != c.want {
			t.Errorf("%s: replaces = %v, want %v", c.name, got, c.want)
		}
	}
}

// A bump clamped at the ceiling replaces until the ceiling leaves less
// than 10% of room; then no replacement fits (the executor parks the
// payout).
func TestBumpAtTheCeiling(t *testing.T) {
	ceiling := gwei(100)
	for _, c := range []struct {
		name string
		old  fees
		want bool
	}{
		{"far below: a full bump", fees{gwei(1), gwei(40)}, true},
		{"clamped, still 10% above", fees{gwei(1), gwei(90)}, true},
		{"within 10% of the ceiling", fees{gwei(1), gwei(95)}, false},
		{"at the ceiling", fees{gwei(1), gwei(100)}, false},
	} {
		now := fees{gwei(1), gwei(21)}
		f := clamp(bumpFees(c.old, now), ceiling)
		if f.cap.Cmp(ceiling) > 0 {
			t.Errorf("%s: bumped cap %s above the ceiling", c.name, f.cap)
		}
		if got := replaces(f, c.old); got != c.want {
			t.Errorf("%s: bump to tip %s cap %s replaces = %v, want %v", c.name, f.tip, f.cap, got, c.want)
		}
	}
}
