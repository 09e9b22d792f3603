package store

import (
	"errors"
	"testing"
)

// An exception id names one item in one table; anything else is "not
// found", the answer a missing or another merchant's id gets too.
func TestParseExceptionID(t *testing.T) {
	for _, tc := range []struct {
		id  string
		ok  bool
		src int
		num int64
	}{
		{"exc_1", true, 0, 1},
		{"exc_9007199254740993", true, 0, 9007199254740993},
		{"exc_payout_42", true, 1, 42},
		{"exc_0", false, 0, 0},
		{"exc_01", false, 0, 0},
		{"exc_-1", false, 0, 0},
		{"exc_+1", false, 0, 0},
		{"exc_1 ", false, 0, 0},
		{"exc_", false, 0, 0},
		{"exc_payout_", false, 0, 0},
		{"exc_payout_0", false, 0, 0},
		{"exc_payout_exc_1", false, 0, 0},
		{"exc_1e3", false, 0, 0},
		{"exc_99999999999999999999", false, 0, 0},
		{"EXC_1", false, 0, 0},
		{"1", false, 0, 0},
		{"evt_1", false, 0, 0},
		{"", false, 0, 0},
	} {
		ref, err := parseExceptionID(tc.id)
		if !tc.ok {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%q: %+v %v, want ErrNotFound", tc.id, ref, err)
			}
			continue
		}
		if err != nil || ref.src != tc.src || ref.num != tc.num {
			t.Errorf("%q: %+v %v, want src %d num %d", tc.id, ref, err, tc.src, tc.num)
			continue
		}
		if ref.id() != tc.id {
			t.Errorf("%q renders back as %q", tc.id, ref.id())
		}
	}
}
