package reconciler

import (
	"math/big"
	"testing"
	"time"
)

func TestConvert(t *testing.T) {
	tests := []struct {
		amount          string
		from, to        uint8
		wantOut, wantDu string
	}{
		{"10000000", 6, 6, "10000000", "0"},
		{"10000000", 6, 18, "10000000000000000000", "0"},
		{"10000000000000000001", 18, 6, "10000000", "1"},
		{"10000000999999999999", 18, 6, "10000000", "999999999999"},
		{"999999999999", 18, 6, "0", "999999999999"},
		{"0", 6, 18, "0", "0"},
	}
	for _, tt := range tests {
		a, _ := new(big.Int).SetString(tt.amount, 10)
		out, dust := Convert(a, tt.from, tt.to)
		if out.String() != tt.wantOut || dust.String() != tt.wantDu {
			t.Errorf("Convert(%s, %d→%d) = %s, %s; want %s, %s", tt.amount, tt.from, tt.to, out, dust, tt.wantOut, tt.wantDu)
		}
	}
}

func TestDecide(t *testing.T) {
	exp := time.Unix(1_700_003_600, 0)
	before, after := exp.Add(-time.Second), exp
	n := func(v int64) *big.Int { return big.NewInt(v) }
	tests := []struct {
		name                string
		requested, credited *big.Int
		now, attributed     time.Time
		want                Decision
		deliver, surplus    string
	}{
		{"exact", n(100), n(100), before, before, Deliver, "100", "0"},
		{"exact after deadline", n(100), n(100), after, after, Deliver, "100", "0"},
		{"exact after deadline, not attributed", n(100), n(100), after, before, Deliver, "100", "0"},
		{"overpaid", n(100), n(130), before, before, Deliver, "100", "30"},
		{"underpaid before deadline waits", n(100), n(60), before, before, Wait, "", ""},
		{"underpaid at deadline bounces", n(100), n(60), after, after, Bounce, "", ""},
		{"underpaid past deadline, not attributed through it, waits", n(100), n(60), after, before, Wait, "", ""},
		{"attributed ahead of the clock still waits for the clock", n(100), n(60), before, after, Wait, "", ""},
		{"open amount delivers all", nil, n(42), before, before, Deliver, "42", "0"},
		{"nothing deliverable waits before deadline", n(100), n(0), before, before, Wait, "", ""},
		{"nothing deliverable bounces at deadline", n(100), n(0), after, after, Bounce, "", ""},
		{"open amount, nothing deliverable, waits before deadline", nil, n(0), before, before, Wait, "", ""},
		{"open amount, nothing deliverable, bounces at deadline", nil, n(0), after, after, Bounce, "", ""},
	}
	for _, tt := range tests {
		d, deliver, surplus := Decide(tt.requested, tt.credited, tt.now, exp, tt.attributed)
		str := func(v *big.Int) string {
			if v == nil {
				return ""
			}
			return v.String()
		}
		if d != tt.want || str(deliver) != tt.deliver || str(surplus) != tt.surplus {
			t.Errorf("%s: Decide = %s, %s, %s; want %s, %s, %s", tt.name, d, str(deliver), str(surplus), tt.want, tt.deliver, tt.surplus)
		}
	}
}
