package evm

import (
	"context"
	"fmt"
	"math/big"
)

// DefaultMaxFeePerGas is the fee ceiling of a chain without one: 200 gwei,
// above what Ethereum mainnet pays outside its worst minutes and far above
// any L2.
var DefaultMaxFeePerGas = big.NewInt(200_000_000_000)

// fees are the EIP-1559 fee fields of a transaction.
type fees struct{ tip, cap *big.Int }

// currentFees returns the suggested tip and a fee cap of twice the latest
// base fee plus the tip, which keeps a transaction valid while the base fee
// rises for several full blocks; capped at the chain's ceiling.
func (d *Driver) currentFees(ctx context.Context) (fees, error) {
	tip, err := d.client.SuggestGasTipCap(ctx)
	if err != nil {
		return fees{}, fmt.Errorf("getting gas tip: %w", err)
	}
	head, err := d.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return fees{}, fmt.Errorf("getting latest header: %w", err)
	}
	if head.BaseFee == nil {
		return fees{}, fmt.Errorf("chain %d has no base fee: EIP-1559 transactions are not supported", d.id)
	}
	return clamp(fees{tip: tip, cap: new(big.Int).Add(tip, new(big.Int).Lsh(head.BaseFee, 1))}, d.maxFee), nil
}

// clamp caps f at the fee ceiling maxFee (nil: none), the tip never above
// the cap.
func clamp(f fees, maxFee *big.Int) fees {
	if maxFee == nil || f.cap.Cmp(maxFee) <= 0 {
		return f
	}
	out := fees{tip: f.tip, cap: new(big.Int).Set(maxFee)}
	if out.tip.Cmp(out.cap) > 0 {
		out.tip = new(big.Int).Set(out.cap)
	}
	return out
}

// replaces reports whether f is enough above old for nodes to take it as
// a replacement: 10% more in both tip and cap (geth's price bump).
func replaces(f, old fees) bool {
	need := func(x *big.Int) *big.Int {
		r := new(big.Int).Mul(x, big.NewInt(110))
		return r.Add(r, big.NewInt(99)).Div(r, big.NewInt(100))
	}
	return f.tip.Cmp(need(old.tip)) >= 0 && f.cap.Cmp(need(old.cap)) >= 0 && f.cap.Cmp(old.cap) > 0
}

// bumpFees raises old by at least 25% in both tip and cap (more than the
// 10% geth and others require to replace a pooled transaction), and to
// at least the current fees.
func bumpFees(old, now fees) fees {
	up := func(x *big.Int) *big.Int {
		// ceil(x * 5/4), and at least x+1 so a zero fee rises too.
		r := new(big.Int).Mul(x, big.NewInt(5))
		r.Add(r, big.NewInt(3)).Div(r, big.NewInt(4))
		if r.Cmp(x) <= 0 {
			r.Add(x, big.NewInt(1))
		}
		return r
	}
	tip := bigMax(up(old.tip), now.tip)
	feeCap := bigMax(up(old.cap), now.cap)
	// The cap must cover the tip, and be high enough for the current base
	// fee at the new tip.
	if floor := new(big.Int).Add(new(big.Int).Sub(now.cap, now.tip), tip); feeCap.Cmp(floor) < 0 {
		feeCap = floor
	}
	return fees{tip: tip, cap: feeCap}
}

func bigMax(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return new(big.Int).Set(b)
}
