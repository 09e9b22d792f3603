package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// hintLimiter bounds the txHash lookups of PUT check per session. Each
// lookup asks every configured EVM chain's node for a receipt, and the
// endpoint needs only a client secret (which browsers hold), so without a
// bound a script could turn one session into unlimited RPC load on the
// providers settle pays for.
//
// Each session has a token bucket: burst lookups at once, refilled at one
// per every. Time comes from the caller (the server's clock), so tests
// drive it without sleeping. A bucket that has refilled completely carries
// no state a new one would not, so it is dropped; the map holds only the
// sessions checked within the last burst×every.
type hintLimiter struct {
	every time.Duration
	burst int

	mu        sync.Mutex
	bySession map[string]*rate.Limiter
	swept     time.Time
}

func newHintLimiter(every time.Duration, burst int) *hintLimiter {
	return &hintLimiter{every: every, burst: burst, bySession: map[string]*rate.Limiter{}}
}

// allow reports whether sessionID may have a lookup at now, and if so
// takes it from the session's budget.
func (l *hintLimiter) allow(sessionID string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= time.Duration(l.burst)*l.every {
		for id, lim := range l.bySession {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(l.bySession, id)
			}
		}
		l.swept = now
	}
	lim, ok := l.bySession[sessionID]
	if !ok {
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.bySession[sessionID] = lim
	}
	return lim.AllowN(now, 1)
}
