package reconciler

import (
	"math/big"
	"time"
)

// Convert moves a raw amount between two stablecoins' decimals 1:1 (one
// USDC unit is worth one USDT unit of the same value). Scaling down
// truncates; the truncated part is returned as dust, in source units, so
// the ledger can show it as variance.
func Convert(amount *big.Int, from, to uint8) (out, dust *big.Int) {
	switch {
	case from == to:
		return new(big.Int).Set(amount), new(big.Int)
	case to > from:
		f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(to-from)), nil)
		return new(big.Int).Mul(amount, f), new(big.Int)
	default:
		f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(from-to)), nil)
		q, r := new(big.Int).QuoRem(amount, f, new(big.Int))
		return q, r
	}
}

// Decision is what to do with a session whose credited deposits are all
// final.
type Decision int

// Possible decisions.
const (
	// Wait: not enough yet, and the session is still open for top-ups.
	Wait Decision = iota
	// Deliver: pay the destination.
	Deliver
	// Bounce: refund the deposits; the session will end bounced.
	Bounce
)

func (d Decision) String() string {
	return [...]string{"wait", "deliver", "bounce"}[d]
}

// Decide applies settle's amount rules to a session whose credited deposits
// are all final. requested is nil for an open amount; credited is the sum of
// credited deposits converted to the destination token's units; attributed
// is the block time through which every configured chain's final blocks
// have been attributed.
//
//   - open amount: deliver everything credited;
//   - credited ≥ requested: deliver the requested amount; the surplus is
//     recorded as an "overpaid" exception (held, visible to finance);
//   - credited < requested, or nothing deliverable at all (a credit that
//     converts to 0 units of the destination token): wait for top-ups until
//     the deadline has passed both on the clock and in the attributed
//     final blocks (a top-up mined in time may not be attributed yet), then
//     bounce (refund what was deposited, in its own token).
func Decide(requested, credited *big.Int, now, expiresAt, attributed time.Time) (d Decision, deliver, surplus *big.Int) {
	switch {
	case credited.Sign() > 0 && requested == nil:
		return Deliver, new(big.Int).Set(credited), new(big.Int)
	case credited.Sign() > 0 && credited.Cmp(requested) >= 0:
		return Deliver, new(big.Int).Set(requested), new(big.Int).Sub(credited, requested)
	case now.Before(expiresAt) || attributed.Before(expiresAt):
		return Wait, nil, nil
	}
	return Bounce, nil, nil
}
