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
	tests := []struct {
		status Status
		now    time.Time
		want   Status
	}{
		{RequiresPaymentMethod, exp.Add(-time.Second), RequiresPaymentMethod},
		{RequiresPaymentMethod, exp, Expired},
		{WaitingPayment, exp.Add(time.Hour), Expired},
		{WaitingPayment, exp.Add(-time.Nanosecond), WaitingPayment},
		// A detected deposit stops the clock.
		{Processing, exp.Add(time.Hour), Processing},
		{Succeeded, exp.Add(time.Hour), Succeeded},
		{Bounced, exp.Add(time.Hour), Bounced},
	}
	for _, tt := range tests {
		s := Session{Status: tt.status, ExpiresAt: exp}
		if got := s.StatusAt(tt.now); got != tt.want {
			t.Errorf("StatusAt(%s, %v) = %s, want %s", tt.status, tt.now.Sub(exp), got, tt.want)
		}
	}
}
