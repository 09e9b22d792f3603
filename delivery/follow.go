package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/settle-dev/settle/delivery/evm"
)

// attentionSent parks a payout whose signed main transaction is still in
// flight: the executor keeps following it (it may still be mined) and
// signs nothing new for it.
func (w *work) attentionSent(ctx context.Context, reason string) error {
	reason = w.e.redact(reason)
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'needs_attention', attention_sent = true, error = $2 WHERE id = $1`, w.p.id, reason); err != nil {
		return fmt.Errorf("moving payout %d to needs_attention: %w", w.p.id, err)
	}
	w.events = append(w.events, event{outcome: outcomeAttention, step: w.step(), attrs: []any{"reason", reason}})
	return nil
}

// follow advances a sent payout: its receipt decides mined or reverted;
// without one the stored bytes are re-broadcast, and after BumpAfter they
// are replaced with higher fees under the same nonce.
func (w *work) follow(ctx context.Context) error {
	p := w.p
	if p.txHash == nil || p.nonce == nil {
		return fmt.Errorf("payout %d is sent but has no tx_hash or nonce", p.id)
	}
	// Any signing of the nonce may be the one that is mined.
	hashes := []common.Hash{common.HexToHash(*p.txHash)}
	for _, h := range p.prior {
		hashes = append(hashes, common.HexToHash(h))
	}
	r, mined, stolen, err := w.c.lookup(ctx, w.e.from, uint64(*p.nonce), hashes)
	if err != nil {
		return err
	}
	if stolen {
		// Re-signing with a new nonce could pay twice if one of ours is
		// mined after all (a node that lags, a reorg); a person decides.
		return fmt.Errorf("nonce %d was used by a transaction that is none of this payout's (%d signings); not re-signing: an operator must check the treasury's transactions",
			*p.nonce, len(hashes))
	}
	if r != nil {
		return w.settle(ctx, r, mined, hashes)
	}
	w.seen[hashes[0]] = true
	if p.hasCalldata() && p.fundHash != nil && len(p.fundRaw) > 0 {
		// A reorg that dropped the execute may have dropped its funding
		// too, and without it the execute's nonce can never be mined.
		fh := p.fundHashes()
		fr, _, err := w.c.receipt(ctx, fh)
		if err != nil {
			return err
		}
		if fr == nil {
			if err := w.rebroadcast("fund", p.fundRaw, fh); err != nil {
				return err
			}
		}
	}
	if p.sentAge >= w.e.cfg.BumpAfter && p.status == "sent" {
		return w.bump(ctx, hashes)
	}
	return w.rebroadcast(w.step(), p.rawTx, hashes)
}

// watch re-checks the receipt of a mined or reverted payout until its
// block is final. If a reorg removed that block, the transaction is looked
// up again: a receipt in another block is recorded as if new (a re-mined
// call may now succeed, or fail), and none sends the payout back to 'sent',
// whose follow re-broadcasts the stored bytes under the same nonce. It
// reports whether the payout's status may have changed.
func (w *work) watch(ctx context.Context) (bool, error) {
	p := w.p
	if p.txHash == nil || p.nonce == nil {
		return false, fmt.Errorf("payout %d is %s but has no tx_hash or nonce", p.id, p.status)
	}
	if p.receiptBlock != nil && p.receiptHash != nil {
		live, err := w.c.blockHash(ctx, uint64(*p.receiptBlock))
		if err != nil {
			return false, err
		}
		if live == common.HexToHash(*p.receiptHash) {
			final, err := w.c.finalized(ctx)
			if err != nil || uint64(*p.receiptBlock) > final {
				return false, err
			}
			if _, err := w.tx.Exec(ctx, `UPDATE payouts SET receipt_final = true WHERE id = $1`, p.id); err != nil {
				return false, fmt.Errorf("marking receipt of payout %d final: %w", p.id, err)
			}
			p.receiptFinal = true
			w.events = append(w.events, event{outcome: outcomeFinal, step: w.step(), hash: common.HexToHash(*p.txHash),
				attrs: []any{"status", p.status, "block", *p.receiptBlock}})
			if p.status == "reverted" && p.kind == "refund" {
				// A delivery that reverts is refunded; a refund that
				// reverts (a blacklisted or refusing recipient, a paused
				// token) has nothing after it: a person decides.
				return true, w.attention(ctx, fmt.Sprintf("refund transfer %s reverted (final): %s", *p.txHash, p.errMsg))
			}
			return false, nil
		}
	}
	// The receipt's block is gone (or was never recorded, for rows from
	// before receipts were watched): where is the transaction now?
	hashes := []common.Hash{common.HexToHash(*p.txHash)}
	for _, h := range p.prior {
		hashes = append(hashes, common.HexToHash(h))
	}
	r, mined, stolen, err := w.c.lookup(ctx, w.e.from, uint64(*p.nonce), hashes)
	if err != nil {
		return false, err
	}
	if stolen {
		return false, fmt.Errorf("payout %d was %s, its block is gone and nonce %d is used by a transaction that is none of its %d signings: an operator must check the treasury's transactions",
			p.id, p.status, *p.nonce, len(hashes))
	}
	if r != nil {
		if p.receiptHash != nil {
			w.events = append(w.events, event{outcome: outcomeReorged, step: w.step(), hash: mined,
				attrs: []any{"was", p.status, "old_block", *p.receiptBlock, "new_block", r.BlockNumber}})
		}
		return true, w.settle(ctx, r, mined, hashes)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', sent_at = now(),
		receipt_block_number = NULL, receipt_block_hash = NULL, receipt_final = false WHERE id = $1`, p.id); err != nil {
		return false, fmt.Errorf("sending payout %d back to follow: %w", p.id, err)
	}
	attrs := []any{"was", p.status}
	if p.receiptBlock != nil {
		attrs = append(attrs, "old_block", *p.receiptBlock)
	}
	w.events = append(w.events, event{outcome: outcomeReorged, step: w.step(), hash: hashes[0], attrs: attrs})
	return true, nil
}

// step names the payout's main transaction.
func (w *work) step() string {
	if w.p.hasCalldata() {
		return "execute"
	}
	return "transfer"
}

// settle records the receipt of the payout's main transaction. tx_hash
// becomes the hash that was mined (the reconciler matches the on-chain
// transfer by it) and prior_tx_hashes the others; raw_tx keeps the newest
// signing.
func (w *work) settle(ctx context.Context, r *types.Receipt, mined common.Hash, hashes []common.Hash) error {
	p := w.p
	others := make([]string, 0, len(hashes)-1)
	for _, h := range hashes {
		if h != mined {
			others = append(others, h.Hex())
		}
	}
	attrs := []any{"block", r.BlockNumber, "gas_used", r.GasUsed}
	// A call payout's execute succeeds whether or not the merchant's call
	// did: the runner's Executed event says which, and that the funds the
	// call did not take are back in the treasury.
	failed := ""
	if p.hasCalldata() {
		var err error
		if failed, err = w.callOutcome(r); err != nil {
			return w.attention(ctx, err.Error())
		}
	}
	if r.Status == types.ReceiptStatusSuccessful && failed == "" {
		if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'mined', tx_hash = $2, prior_tx_hashes = $3, error = NULL, attention_sent = false,
			receipt_block_number = $4, receipt_block_hash = $5, receipt_final = false WHERE id = $1`,
			p.id, mined.Hex(), others, r.BlockNumber.Int64(), r.BlockHash.Hex()); err != nil {
			return fmt.Errorf("marking payout mined: %w", err)
		}
		w.events = append(w.events, event{outcome: outcomeMined, step: w.step(), hash: mined, attrs: attrs})
		return nil
	}
	reason := failed
	if reason == "" {
		// The stored bytes carry the same call as every signing of the
		// nonce.
		tx, _ := decodeTx(p.rawTx)
		reason = w.c.revertReason(ctx, tx, w.e.from, r)
	}
	reason = w.e.redact(reason) // a failed replay quotes the node's URL
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'reverted', tx_hash = $2, prior_tx_hashes = $3, error = $4, attention_sent = false,
		receipt_block_number = $5, receipt_block_hash = $6, receipt_final = false WHERE id = $1`,
		p.id, mined.Hex(), others, reason, r.BlockNumber.Int64(), r.BlockHash.Hex()); err != nil {
		return fmt.Errorf("marking payout reverted: %w", err)
	}
	w.events = append(w.events, event{outcome: outcomeReverted, step: w.step(), hash: mined, attrs: append(attrs, "error", reason)})
	return nil
}

// bump replaces the stuck main transaction with one of the same nonce,
// gas and call and fees at least 25% higher. The old hash goes to
// prior_tx_hashes, since it may still be the one that is mined.
func (w *work) bump(ctx context.Context, hashes []common.Hash) error {
	p := w.p
	tx, old, err := w.replacement(ctx, p.rawTx, uint64(*p.nonce), p.sentAge)
	if err != nil || tx == nil {
		return err
	}
	raw, err := encodeTx(tx)
	if err != nil {
		return err
	}
	// sent_at becomes the time of the newest signing, which the next bump
	// waits on.
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET tx_hash = $2, raw_tx = $3, prior_tx_hashes = array_append(prior_tx_hashes, $4),
		sent_at = now() WHERE id = $1`, p.id, tx.Hash().Hex(), raw, old.Hex()); err != nil {
		return fmt.Errorf("storing fee bump: %w", err)
	}
	w.bumped(w.step(), tx, old, hashes)
	return nil
}

// bumpFund replaces a stuck runner funding the same way; its earlier
// signings go to fund_prior_tx_hashes.
func (w *work) bumpFund(ctx context.Context, hashes []common.Hash) error {
	p := w.p
	tx, old, err := w.replacement(ctx, p.fundRaw, uint64(*p.fundNonce), p.fundAge)
	if err != nil || tx == nil {
		return err
	}
	raw, err := encodeTx(tx)
	if err != nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET fund_tx_hash = $2, fund_raw_tx = $3, fund_prior_tx_hashes = array_append(fund_prior_tx_hashes, $4),
		fund_sent_at = now() WHERE id = $1`, p.id, tx.Hash().Hex(), raw, old.Hex()); err != nil {
		return fmt.Errorf("storing funding fee bump: %w", err)
	}
	w.bumped("fund", tx, old, hashes)
	return nil
}

// replacement signs the stored transaction raw (nonce) again with fees at
// least 25% higher, capped at the chain's ceiling. When no replacement
// fits under the ceiling (nodes take one only at 10% more in tip and cap)
// the payout needs attention, its signed transaction still followed, and
// replacement returns no transaction.
func (w *work) replacement(ctx context.Context, raw []byte, nonce uint64, age time.Duration) (*types.Transaction, common.Hash, error) {
	old, err := decodeTx(raw)
	if err != nil {
		return nil, common.Hash{}, err
	}
	if old.To() == nil || old.Nonce() != nonce {
		return nil, common.Hash{}, fmt.Errorf("stored transaction %s does not match payout %d", old.Hash().Hex(), w.p.id)
	}
	now, err := w.c.currentFees(ctx)
	if err != nil {
		return nil, common.Hash{}, err
	}
	prev := fees{tip: old.GasTipCap(), cap: old.GasFeeCap()}
	f := w.c.clamp(bumpFees(prev, now))
	if !replaces(f, prev) {
		return nil, common.Hash{}, w.attentionSent(ctx, fmt.Sprintf("unmined for %s at fee cap %s wei (tip %s); the chain's fee ceiling %s wei allows no replacement: nonce %d blocks later payouts",
			age.Round(time.Second), prev.cap, prev.tip, w.c.maxFee, old.Nonce()))
	}
	tx, err := w.e.signTx(w.c, old.Nonce(), *old.To(), old.Data(), old.Gas(), f)
	if err != nil {
		return nil, common.Hash{}, err
	}
	return tx, old.Hash(), nil
}

// bumped queues the log line and broadcast of a fee replacement.
func (w *work) bumped(step string, tx *types.Transaction, old common.Hash, hashes []common.Hash) {
	w.seen[tx.Hash()] = true
	f := fees{tip: tx.GasTipCap(), cap: tx.GasFeeCap()}
	w.events = append(w.events, event{outcome: outcomeBumped, step: step, hash: tx.Hash(), attrs: []any{
		"replaces", old.Hex(), "nonce", tx.Nonce(), "tip", f.tip, "fee_cap", f.cap}})
	w.sends = append(w.sends, send{tx: tx, step: step, first: true, hashes: append([]common.Hash{tx.Hash()}, hashes...)})
}

// callOutcome reads the runner's report from the receipt of a call
// payout's execute: "" when the merchant's call took funds (mined), else
// why the payout reads as reverted (the call reverted or took nothing; the
// runner returned the whole amount in the same transaction, so a refund
// cannot pay twice). An error means the execute itself failed, with the
// funds still at the runner: that needs an operator, not a refund.
func (w *work) callOutcome(r *types.Receipt) (string, error) {
	p := w.p
	if p.runner == nil {
		return "", fmt.Errorf("payout %d has calldata but no runner_address", p.id)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		return "", fmt.Errorf("execute %s reverted in block %s: the funds are still at runner %s (`settle payouts retry %d` signs a new execute)",
			r.TxHash.Hex(), r.BlockNumber, p.runner.Hex(), p.id)
	}
	ex, err := evm.ParseExecuted(r, *p.runner)
	if err != nil {
		return "", fmt.Errorf("execute %s of payout %d: %w", r.TxHash.Hex(), p.id, err)
	}
	switch {
	case !ex.Success:
		return fmt.Sprintf("merchant call reverted (%s); runner returned %s to the treasury in %s", evm.Reason(ex.Result), ex.Returned, r.TxHash.Hex()), nil
	case ex.Delivered.Sign() == 0:
		return fmt.Sprintf("merchant call took nothing; runner returned %s to the treasury in %s", ex.Returned, r.TxHash.Hex()), nil
	}
	return "", nil
}

// followFund advances a call payout whose runner funding is stored: once
// it is mined the execute is signed. A funding that reverted moved
// nothing, and the reason is ours (the treasury's balance, a paused
// token), not the merchant's: it needs attention, not a bounce.
func (w *work) followFund(ctx context.Context) error {
	p := w.p
	if p.fundNonce == nil || p.runner == nil {
		return fmt.Errorf("payout %d has a funding hash but no fund_nonce or runner_address", p.id)
	}
	hashes := p.fundHashes()
	r, _, stolen, err := w.c.lookup(ctx, w.e.from, uint64(*p.fundNonce), hashes)
	if err != nil {
		return err
	}
	switch {
	case stolen:
		return w.attention(ctx, fmt.Sprintf("nonce %d of funding %s was used by another transaction: an operator must check the treasury's transactions",
			*p.fundNonce, hashes[0].Hex()))
	case r == nil:
		w.seen[hashes[0]] = true
		if p.fundAge >= w.e.cfg.BumpAfter && p.status == "pending" {
			return w.bumpFund(ctx, hashes)
		}
		return w.rebroadcast("fund", p.fundRaw, hashes)
	case r.Status != types.ReceiptStatusSuccessful:
		tx, _ := decodeTx(p.fundRaw)
		return w.attention(ctx, "funding of runner "+p.runner.Hex()+" "+w.c.revertReason(ctx, tx, w.e.from, r))
	}
	return w.signExecute(ctx)
}
