package session

import "testing"

func TestPaymentStatusOf(t *testing.T) {
	tests := []struct {
		s    Status
		want PaymentStatus
	}{
		{RequiresPaymentMethod, PaymentUnpaid},
		{WaitingPayment, PaymentUnpaid},
		{Processing, PaymentStarted},
		{Succeeded, PaymentCompleted},
		{Bounced, PaymentBounced},
		{Expired, PaymentUnpaid},
	}
	seen := map[Status]bool{}
	for _, tt := range tests {
		seen[tt.s] = true
		if got := PaymentStatusOf(tt.s); got != tt.want {
			t.Errorf("PaymentStatusOf(%s) = %s, want %s", tt.s, got, tt.want)
		}
	}
	// Every session status is mapped: a new one must be added here.
	for from, tos := range transitions {
		for _, s := range append(tos, from) {
			if !seen[s] {
				t.Errorf("status %s has no row in this table", s)
			}
		}
	}
}
