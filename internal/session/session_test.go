package session

import (
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	all := []Status{RequiresPaymentMethod, WaitingPayment, Processing, Succeeded, Bounced, Expired}
	allowed := map[[2]Status]bool{
		{RequiresPaymentMethod, WaitingPayment}: true,
		{RequiresPaymentMethod, Processing}:     true,
		{RequiresPaymentMethod, Expired}:        true,
		{WaitingPayment, Processing}:            true,
		{WaitingPayment, Expired}:               true,
		{Processing, WaitingPayment}:            true,
		{Processing, Succeeded}:                 true,
		{Processing, Bounced}:                   true,
	}
	for _, from := range all {
		for _, to := range all {
			want := allowed[[2]Status{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			if err := Transition(from, to); (err == nil) != want {
				t.Errorf("Transition(%s, %s) = %v, want allowed=%v", from, to, err, want)
			}
			if from.Terminal() && CanTransition(from, to) {
				t.Errorf("terminal %s may move to %s", from, to)
			}
		}
	}
}

func TestStatusPredicates(t *testing.T) {
	tests := []struct {
		s                          Status
		terminal, expirable, valid bool
	}{
		{RequiresPaymentMethod, false, true, true},
		{WaitingPayment, false, true, true},
		{Processing, false, false, true},
		{Succeeded, true, false, true},
		{Bounced, true, false, true},
		{Expired, true, false, true},
		{"paid", false, false, false},
	}
	for _, tt := range tests {
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("%s.Terminal() = %v", tt.s, got)
		}
		if got := tt.s.Expirable(); got != tt.expirable {
			t.Errorf("%s.Expirable() = %v", tt.s, got)
		}
		if got := tt.s.Valid(); got != tt.valid {
			t.Errorf("%s.Valid() = %v", tt.s, got)
		}
	}
}

func TestStatusAt(t *testing.T) {
	exp := time.Unix(1_700_003_600, 0)
	var none time.Time // no reconciler has recorded progress
	tests := []struct {
		status     Status
		now        time.Time
		attributed time.Time
		want       Status
	}{
		{RequiresPaymentMethod, exp.Add(-time.Second), none, RequiresPaymentMethod},
		{RequiresPaymentMethod, exp, none, Expired},
		{WaitingPayment, exp.Add(time.Hour), none, Expired},
		{WaitingPayment, exp.Add(-time.Nanosecond), none, WaitingPayment},
		// With a receiver, expired only once every chain was read past the
		// deadline: a deposit mined in time may still be on its way.
		{WaitingPayment, exp.Add(time.Hour), exp.Add(-time.Second), WaitingPayment},
		{WaitingPayment, exp.Add(time.Hour), exp, Expired},
		{WaitingPayment, exp.Add(time.Hour), exp.Add(time.Second), Expired},
		{WaitingPayment, exp.Add(-time.Second), exp.Add(time.Second), WaitingPayment},
		// Without a receiver nothing can arrive: expired at the deadline.
		{RequiresPaymentMethod, exp, exp.Add(-time.Hour), Expired},
		// A detected deposit stops the clock.
		{Processing, exp.Add(time.Hour), none, Processing},
		{Succeeded, exp.Add(time.Hour), none, Succeeded},
		{Bounced, exp.Add(time.Hour), exp.Add(-time.Hour), Bounced},
		{Expired, exp.Add(time.Hour), exp.Add(-time.Hour), Expired},
	}
	for _, tt := range tests {
		s := Session{Status: tt.status, ExpiresAt: exp, AttributedThrough: tt.attributed}
		if got := s.StatusAt(tt.now); got != tt.want {
			t.Errorf("StatusAt(%s, now %v, attributed %v) = %s, want %s", tt.status, tt.now.Sub(exp), tt.attributed.Sub(exp), got, tt.want)
		}
	}
}
