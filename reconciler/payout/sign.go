package payout

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// spend says what a transaction does with the payout's amount, which
// decides the checks made under the nonce lock before it is signed.
type spend int

const (
	// spendNothing: a revoke moves no tokens.
	spendNothing spend = iota
	// spendAmount: a transfer or call takes the amount from the treasury.
	spendAmount
	// spendApproval: an approval lets the destination take the amount, and
	// must be the only live approval of that destination.
	spendApproval
)

// errWait means the payout must wait for another one; not a failure.
var errWait = errors.New("waiting for another payout")

// allocate takes the next treasury nonce on the payout's chain under the
// row lock of treasury_nonces, after checking what s requires. The lock is
// held until the caller's transaction ends, so the transaction that stores
// the signed bytes also advances the nonce, and no two signings can share
// a nonce or see a stale sum of payouts in flight.
func (w *work) allocate(ctx context.Context, s spend) (uint64, error) {
	p, from := w.p, w.e.from
	stored, err := lockNonce(ctx, w.tx, p.chainID, from)
	if err != nil {
		return 0, err
	}
	if s == spendApproval {
		busy, err := approvalBusy(ctx, w.tx, p)
		if err != nil {
			return 0, err
		}
		if busy {
			return 0, errWait
		}
	}
	if s != spendNothing {
		if err := w.checkFunds(ctx); err != nil {
			return 0, err
		}
	}
	pending, err := w.c.client.PendingNonceAt(ctx, from)
	if err != nil {
		return 0, fmt.Errorf("getting pending nonce of %s: %w", from, err)
	}
	if pending > stored {
		// Never reuse a nonce the chain has seen used, e.g. by a
		// transaction sent with the treasury key outside settle.
		if stored > 0 {
			w.e.logger.WarnContext(ctx, "treasury nonce behind the chain; jumping forward",
				"chain_id", p.chainID, "stored", stored, "chain_pending", pending)
		}
		stored = pending
	}
	if err := storeNonce(ctx, w.tx, p.chainID, from, stored+1); err != nil {
		return 0, err
	}
	return stored, nil
}

// checkFunds refuses to sign when the treasury's token balance does not
// cover this payout on top of the others already signed but maybe not
// mined: such a transaction would revert on chain, which for a delivery
// reads as the merchant's refusal.
func (w *work) checkFunds(ctx context.Context) error {
	p := w.p
	bal, err := w.c.tokenBalance(ctx, p.token, w.e.from)
	if err != nil {
		return err
	}
	others, err := inFlight(ctx, w.tx, p)
	if err != nil {
		return err
	}
	if need := new(big.Int).Add(others, p.amount); bal.Cmp(need) < 0 {
		return fmt.Errorf("treasury holds %s of token %s; payout needs %s on top of %s in flight", bal, p.token.Hex(), p.amount, others)
	}
	return nil
}

// signTransfer signs and stores a plain payout's ERC-20 transfer.
func (w *work) signTransfer(ctx context.Context) error {
	p := w.p
	data := transferData(p.to, p.amount)
	// An estimate that fails here (no tokens, no gas) leaves the payout
	// pending and burns no nonce.
	gas, err := w.c.estimate(ctx, w.e.from, p.token, data)
	if err != nil {
		return fmt.Errorf("transfer of %s to %s: %w", p.amount, p.to.Hex(), err)
	}
	tx, raw, err := w.sign(ctx, spendAmount, p.token, data, gas)
	if err != nil {
		return w.waitOrFail(err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', from_address = $2, nonce = $3, tx_hash = $4, raw_tx = $5,
		sent_at = now(), error = NULL WHERE id = $1`, p.id, hexAddr(w.e.from), int64(tx.Nonce()), tx.Hash().Hex(), raw); err != nil {
		return fmt.Errorf("storing signed transfer: %w", err)
	}
	w.signed("transfer", tx, outcomeSigned)
	return nil
}

// signApprove signs and stores the approval that precedes a contract call.
func (w *work) signApprove(ctx context.Context) error {
	p := w.p
	data := approveData(p.to, p.amount)
	gas, err := w.c.estimate(ctx, w.e.from, p.token, data)
	if err != nil {
		return fmt.Errorf("approval of %s for %s: %w", p.amount, p.to.Hex(), err)
	}
	tx, raw, err := w.sign(ctx, spendApproval, p.token, data, gas)
	if err != nil {
		return w.waitOrFail(err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET from_address = $2, approve_nonce = $3, approve_tx_hash = $4, approve_raw_tx = $5,
		error = NULL WHERE id = $1`, p.id, hexAddr(w.e.from), int64(tx.Nonce()), tx.Hash().Hex(), raw); err != nil {
		return fmt.Errorf("storing signed approval: %w", err)
	}
	w.signed("approve", tx, outcomeSigned)
	return nil
}

// signCall signs and stores the contract call of a payout whose approval is
// mined.
func (w *work) signCall(ctx context.Context) error {
	p := w.p
	gas, err := w.c.estimate(ctx, w.e.from, p.to, p.calldata)
	if err != nil {
		if !isRevert(err) {
			return fmt.Errorf("call of %s: %w", p.to.Hex(), err)
		}
		// Send it anyway: the merchant's contract decides, on chain and on
		// record, not our simulation of it.
		w.e.logger.WarnContext(ctx, "payout call reverts in simulation; sending it with a fixed gas limit",
			"payout_id", p.id, "session_id", p.sessionID, "chain_id", p.chainID, "to", p.to.Hex(), "err", err)
		gas = fixedCallGas
	}
	tx, raw, err := w.sign(ctx, spendAmount, p.to, p.calldata, gas)
	if err != nil {
		return w.waitOrFail(err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', nonce = $2, tx_hash = $3, raw_tx = $4,
		sent_at = now(), error = NULL WHERE id = $1`, p.id, int64(tx.Nonce()), tx.Hash().Hex(), raw); err != nil {
		return fmt.Errorf("storing signed call: %w", err)
	}
	w.signed("call", tx, outcomeSigned)
	return nil
}

// sign prices, allocates a nonce for, signs and encodes a transaction from
// the treasury to `to`.
func (w *work) sign(ctx context.Context, s spend, to common.Address, data []byte, gas uint64) (*types.Transaction, []byte, error) {
	f, err := w.c.currentFees(ctx)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := w.allocate(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	tx, err := w.e.signTx(w.c, nonce, to, data, gas, f)
	if err != nil {
		return nil, nil, err
	}
	raw, err := encodeTx(tx)
	if err != nil {
		return nil, nil, err
	}
	return tx, raw, nil
}

// waitOrFail turns errWait into a counted, silent wait (the caller's
// transaction then commits nothing but the unchanged rows).
func (w *work) waitOrFail(err error) error {
	if errors.Is(err, errWait) {
		w.res.Waiting++
		return nil
	}
	return err
}
