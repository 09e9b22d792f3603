package payout

import (
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// revoke withdraws the approval of a payout whose call reverted: the
// reconciler refunds such a deposit, and an allowance left behind would
// let the destination contract pull the amount as well. Progress lives in
// revoke_*: revoke_tx_hash NULL means to sign, set means signed (its bytes
// in revoke_raw_tx), and revoke_mined that its receipt succeeded. Until
// the payout is final a mined revoke is checked again, and re-broadcast if
// a reorg dropped it, so its nonce never becomes a gap. approve(spender, 0)
// is idempotent, so a failed revoke is simply signed again with a new
// nonce.
func (w *work) revoke(ctx context.Context) error {
	p := w.p
	if p.revokeHash == nil {
		return w.signRevoke(ctx)
	}
	if p.revokeNonce == nil {
		return fmt.Errorf("payout %d has a revoke hash but no revoke_nonce", p.id)
	}
	hash := common.HexToHash(*p.revokeHash)
	r, _, stolen, err := w.c.lookup(ctx, w.e.from, uint64(*p.revokeNonce), []common.Hash{hash})
	if err != nil {
		return err
	}
	switch {
	case r == nil && !stolen:
		if p.revokeMined {
			if _, err := w.tx.Exec(ctx, `UPDATE payouts SET revoke_mined = false WHERE id = $1`, p.id); err != nil {
				return fmt.Errorf("marking revoke unmined: %w", err)
			}
			p.revokeMined = false
			w.events = append(w.events, event{outcome: outcomeReorged, step: "revoke", hash: hash})
		}
		w.seen[hash] = true
		return w.rebroadcast("revoke", p.revokeRaw, []common.Hash{hash})
	case r != nil && r.Status == types.ReceiptStatusSuccessful:
		if p.revokeMined {
			return nil
		}
		if _, err := w.tx.Exec(ctx, `UPDATE payouts SET revoke_mined = true WHERE id = $1`, p.id); err != nil {
			return fmt.Errorf("marking revoke mined: %w", err)
		}
		p.revokeMined = true
		w.events = append(w.events, event{outcome: outcomeRevoked, step: "revoke", hash: hash, attrs: []any{"block", r.BlockNumber}})
		return nil
	}
	why := "nonce used by another transaction"
	if r != nil {
		why = "reverted in block " + r.BlockNumber.String()
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET revoke_nonce = NULL, revoke_tx_hash = NULL, revoke_raw_tx = NULL, revoke_mined = false WHERE id = $1`, p.id); err != nil {
		return fmt.Errorf("clearing failed revoke: %w", err)
	}
	w.events = append(w.events, event{outcome: outcomeError, step: "revoke", hash: hash, attrs: []any{"error", why}})
	return nil
}

func (w *work) signRevoke(ctx context.Context) error {
	p := w.p
	data := approveData(p.to, new(big.Int))
	gas, err := w.c.estimate(ctx, w.e.from, p.token, data)
	if err != nil {
		return fmt.Errorf("revoking approval of %s: %w", p.to.Hex(), err)
	}
	tx, raw, err := w.sign(ctx, spendNothing, p.token, data, gas)
	if err != nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET revoke_nonce = $2, revoke_tx_hash = $3, revoke_raw_tx = $4 WHERE id = $1`,
		p.id, int64(tx.Nonce()), tx.Hash().Hex(), raw); err != nil {
		return fmt.Errorf("storing signed revoke: %w", err)
	}
	w.signed("revoke", tx, outcomeSigned)
	return nil
}
