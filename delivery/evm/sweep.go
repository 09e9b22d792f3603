package evm

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/driver"
)

// transferGasFloor is the least gas a sweep's transfer is given, whatever
// the estimate says (a receiver that cannot pay a re-send is stuck).
const transferGasFloor = 65_000

// Sweep signs the next transaction of sweep s. With topUp, a receiver
// that cannot pay its transfer at the current fee cap first gets the
// difference from the treasury (a plain coin transfer, its nonce from
// treasury_nonces in tx; GasAmount is set). Otherwise the receiver signs
// the transfer of the sweep's amount to the treasury, with fees its gas
// balance covers (fees may have risen since the top-up): receivers sign
// nothing but sweeps, one open at a time, so the chain's pending nonce is
// theirs alone. A receiver key that derives another address is a
// *driver.AttentionError.
func (d *Driver) Sweep(ctx context.Context, tx pgx.Tx, s driver.Sweep, topUp bool) (driver.SweepTx, error) {
	if d.receiverKey == nil {
		return driver.SweepTx{}, errors.New("sweeping is off: no receiver keys")
	}
	receiver, token := common.HexToAddress(s.Receiver), common.HexToAddress(s.Token)
	data := transferData(d.from, s.Amount)
	gas, err := d.estimate(ctx, receiver, &token, data)
	if err != nil {
		return driver.SweepTx{}, fmt.Errorf("estimating sweep transfer: %w", err)
	}
	gas = max(gas, transferGasFloor)
	f, err := d.currentFees(ctx)
	if err != nil {
		return driver.SweepTx{}, err
	}
	bal, err := d.client.BalanceAt(ctx, receiver, nil)
	if err != nil {
		return driver.SweepTx{}, fmt.Errorf("reading gas balance of receiver %s: %w", receiver.Hex(), err)
	}
	if need := new(big.Int).Mul(f.cap, new(big.Int).SetUint64(gas)); topUp && bal.Cmp(need) < 0 {
		top := new(big.Int).Sub(need, bal)
		nonce, err := d.takeNonce(ctx, tx, nil)
		if err != nil {
			return driver.SweepTx{}, err
		}
		t, err := d.signTx(d.key, nonce, &receiver, nil, top, 21_000, f)
		if err != nil {
			return driver.SweepTx{}, fmt.Errorf("signing transfer of %s wei to %s: %w", top, receiver.Hex(), err)
		}
		st, err := stored(d.from, t)
		return driver.SweepTx{Tx: st, GasAmount: top}, err
	}
	if afford := new(big.Int).Div(bal, new(big.Int).SetUint64(gas)); afford.Cmp(f.cap) < 0 {
		f.cap = afford
		if f.tip.Cmp(f.cap) > 0 {
			f.tip = new(big.Int).Set(f.cap)
		}
	}
	key, err := d.receiverKey(s.Index)
	if err != nil {
		return driver.SweepTx{}, fmt.Errorf("deriving receiver %d: %w", s.Index, err)
	}
	if got := crypto.PubkeyToAddress(key.PublicKey); got != receiver {
		return driver.SweepTx{}, driver.Attention(fmt.Sprintf("receiver index %d derives %s, not %s: wrong master seed?", s.Index, got.Hex(), receiver.Hex()))
	}
	nonce, err := d.client.PendingNonceAt(ctx, receiver)
	if err != nil {
		return driver.SweepTx{}, fmt.Errorf("getting nonce of receiver %s: %w", receiver.Hex(), err)
	}
	t, err := d.signTx(key, nonce, &token, data, nil, gas, f)
	if err != nil {
		return driver.SweepTx{}, fmt.Errorf("signing sweep: %w", err)
	}
	st, err := stored(receiver, t)
	return driver.SweepTx{Tx: st}, err
}
