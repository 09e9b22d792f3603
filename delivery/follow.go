package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/settle-dev/settle/delivery/driver"
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

// follow advances a sent payout: its inclusion decides mined or reverted;
// without one the stored bytes are re-broadcast, and after BumpAfter they
// are replaced by the driver's Bump (same nonce, higher fees).
func (w *work) follow(ctx context.Context) error {
	p := w.p
	if p.txHash == nil || p.nonce == nil {
		return fmt.Errorf("payout %d is sent but has no tx_hash or nonce", p.id)
	}
	// Any signing of the nonce may be the one that is mined.
	t := w.mainTx()
	in, err := w.d.Find(ctx, t)
	if errors.Is(err, driver.ErrNonceTaken) {
		// Re-signing with a new nonce could pay twice if one of ours is
		// mined after all (a node that lags, a reorg); a person decides.
		return fmt.Errorf("nonce %d was used by a transaction that is none of this payout's (%d signings); not re-signing: an operator must check the treasury's transactions",
			*p.nonce, len(t.Hashes()))
	}
	if err != nil {
		return err
	}
	if in != nil {
		return w.settle(ctx, in, t)
	}
	w.seen[t.Hash] = true
	if p.hasCalldata() && p.fundHash != nil && len(p.fundRaw) > 0 {
		// A reorg that dropped the execute may have dropped its funding
		// too, and without it the execute's nonce can never be mined.
		ft := w.fundTx()
		fin, err := w.d.Find(ctx, ft)
		if err != nil && !errors.Is(err, driver.ErrNonceTaken) {
			return err
		}
		if fin == nil {
			if err := w.rebroadcast("fund", ft); err != nil {
				return err
			}
		}
	}
	if p.sentAge >= w.e.cfg.BumpAfter && p.status == "sent" {
		return w.bump(ctx, t)
	}
	return w.rebroadcast(w.step(), t)
}

// mainTx is the payout's stored main transaction (transfer or execute).
func (w *work) mainTx() driver.Tx {
	p := w.p
	t := driver.Tx{From: w.d.Treasury(), Hash: *p.txHash, Raw: p.rawTx, Prior: p.prior}
	if p.nonce != nil {
		t.Nonce = uint64(*p.nonce)
	}
	return t
}

// fundTx is a call payout's stored setup transaction (its runner funding).
func (w *work) fundTx() driver.Tx {
	p := w.p
	t := driver.Tx{From: w.d.Treasury(), Hash: *p.fundHash, Raw: p.fundRaw, Prior: p.fundPrior}
	if p.fundNonce != nil {
		t.Nonce = uint64(*p.fundNonce)
	}
	return t
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
		live, err := w.d.Block(ctx, uint64(*p.receiptBlock))
		if err != nil {
			return false, err
		}
		if live.Hash != "" && strings.EqualFold(live.Hash, *p.receiptHash) {
			final, err := w.d.Finalized(ctx)
			if err != nil || uint64(*p.receiptBlock) > final {
				return false, err
			}
			if _, err := w.tx.Exec(ctx, `UPDATE payouts SET receipt_final = true WHERE id = $1`, p.id); err != nil {
				return false, fmt.Errorf("marking receipt of payout %d final: %w", p.id, err)
			}
			p.receiptFinal = true
			w.events = append(w.events, event{outcome: outcomeFinal, step: w.step(), hash: *p.txHash,
				attrs: []any{"status", p.status, "block", *p.receiptBlock}})
			if p.status == "reverted" && (p.kind == "refund" || p.kind == "exception_refund") {
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
	t := w.mainTx()
	in, err := w.d.Find(ctx, t)
	if errors.Is(err, driver.ErrNonceTaken) {
		return false, fmt.Errorf("payout %d was %s, its block is gone and nonce %d is used by a transaction that is none of its %d signings: an operator must check the treasury's transactions",
			p.id, p.status, *p.nonce, len(t.Hashes()))
	}
	if err != nil {
		return false, err
	}
	if in != nil {
		if p.receiptHash != nil {
			w.events = append(w.events, event{outcome: outcomeReorged, step: w.step(), hash: in.Hash,
				attrs: []any{"was", p.status, "old_block", *p.receiptBlock, "new_block", in.Block}})
		}
		return true, w.settle(ctx, in, t)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', sent_at = now(),
		receipt_block_number = NULL, receipt_block_hash = NULL, receipt_final = false WHERE id = $1`, p.id); err != nil {
		return false, fmt.Errorf("sending payout %d back to follow: %w", p.id, err)
	}
	attrs := []any{"was", p.status}
	if p.receiptBlock != nil {
		attrs = append(attrs, "old_block", *p.receiptBlock)
	}
	w.events = append(w.events, event{outcome: outcomeReorged, step: w.step(), hash: t.Hash, attrs: attrs})
	return true, nil
}

// step names the payout's main transaction.
func (w *work) step() string {
	if w.p.hasCalldata() {
		return "execute"
	}
	return "transfer"
}

// settle records the inclusion of the payout's main transaction t, as the
// driver's Outcome judges it. tx_hash becomes the hash that was included
// (the reconciler matches the on-chain transfer by it) and
// prior_tx_hashes the others; raw_tx keeps the newest signing.
func (w *work) settle(ctx context.Context, in *driver.Inclusion, t driver.Tx) error {
	p := w.p
	others := make([]string, 0, len(t.Prior))
	for _, h := range t.Hashes() {
		if !strings.EqualFold(h, in.Hash) {
			others = append(others, h)
		}
	}
	attrs := []any{"block", in.Block, "gas_used", in.GasUsed}
	reason, err := w.d.Outcome(ctx, p.payout(), driver.Main, t, in)
	var ae *driver.AttentionError
	if errors.As(err, &ae) {
		return w.attention(ctx, ae.Reason)
	}
	if err != nil {
		return err
	}
	if reason == "" {
		if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'mined', tx_hash = $2, prior_tx_hashes = $3, error = NULL, attention_sent = false,
			receipt_block_number = $4, receipt_block_hash = $5, receipt_final = false WHERE id = $1`,
			p.id, in.Hash, others, in.Block, in.BlockHash); err != nil {
			return fmt.Errorf("marking payout mined: %w", err)
		}
		w.events = append(w.events, event{outcome: outcomeMined, step: w.step(), hash: in.Hash, attrs: attrs})
		return nil
	}
	reason = w.e.redact(reason) // a failed replay quotes the node's URL
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'reverted', tx_hash = $2, prior_tx_hashes = $3, error = $4, attention_sent = false,
		receipt_block_number = $5, receipt_block_hash = $6, receipt_final = false WHERE id = $1`,
		p.id, in.Hash, others, reason, in.Block, in.BlockHash); err != nil {
		return fmt.Errorf("marking payout reverted: %w", err)
	}
	w.events = append(w.events, event{outcome: outcomeReverted, step: w.step(), hash: in.Hash, attrs: append(attrs, "error", reason)})
	return nil
}

// bump replaces the stuck main transaction t by the driver's Bump. The
// old hash goes to prior_tx_hashes, since it may still be the one that is
// mined. When the chain's fee ceiling allows no replacement the payout
// needs attention, its signed transaction still followed.
func (w *work) bump(ctx context.Context, t driver.Tx) error {
	p := w.p
	s, err := w.replacement(ctx, t, p.sentAge)
	if err != nil || s == nil {
		return err
	}
	// sent_at becomes the time of the newest signing, which the next bump
	// waits on.
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET tx_hash = $2, raw_tx = $3, prior_tx_hashes = array_append(prior_tx_hashes, $4),
		sent_at = now() WHERE id = $1`, p.id, s.Hash, s.Raw, t.Hash); err != nil {
		return fmt.Errorf("storing fee bump: %w", err)
	}
	w.signed(w.step(), *s, outcomeBumped)
	return nil
}

// bumpFund replaces a stuck runner funding the same way; its earlier
// signings go to fund_prior_tx_hashes.
func (w *work) bumpFund(ctx context.Context, t driver.Tx) error {
	p := w.p
	s, err := w.replacement(ctx, t, p.fundAge)
	if err != nil || s == nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET fund_tx_hash = $2, fund_raw_tx = $3, fund_prior_tx_hashes = array_append(fund_prior_tx_hashes, $4),
		fund_sent_at = now() WHERE id = $1`, p.id, s.Hash, s.Raw, t.Hash); err != nil {
		return fmt.Errorf("storing funding fee bump: %w", err)
	}
	w.signed("fund", *s, outcomeBumped)
	return nil
}

// replacement asks the driver for a replacement of t; at the fee ceiling
// it parks the payout (attention_sent) and returns none.
func (w *work) replacement(ctx context.Context, t driver.Tx, age time.Duration) (*driver.Signed, error) {
	s, err := w.d.Bump(ctx, t, age)
	var ce *driver.FeeCeilingError
	if errors.As(err, &ce) {
		return nil, w.attentionSent(ctx, ce.Reason)
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// followFund advances a call payout whose runner funding is stored: once
// it is included the execute is signed. A funding that failed moved
// nothing, and the reason is ours (the treasury's balance, a paused
// token), not the merchant's: the driver's Outcome makes it need
// attention, not a bounce.
func (w *work) followFund(ctx context.Context) error {
	p := w.p
	if p.fundNonce == nil || p.runner == "" {
		return fmt.Errorf("payout %d has a funding hash but no fund_nonce or runner_address", p.id)
	}
	t := w.fundTx()
	in, err := w.d.Find(ctx, t)
	switch {
	case errors.Is(err, driver.ErrNonceTaken):
		return w.attention(ctx, fmt.Sprintf("nonce %d of funding %s was used by another transaction: an operator must check the treasury's transactions",
			*p.fundNonce, t.Hash))
	case err != nil:
		return err
	case in == nil:
		w.seen[t.Hash] = true
		if p.fundAge >= w.e.cfg.BumpAfter && p.status == "pending" {
			return w.bumpFund(ctx, t)
		}
		return w.rebroadcast("fund", t)
	}
	reason, err := w.d.Outcome(ctx, p.payout(), driver.Setup, t, in)
	var ae *driver.AttentionError
	switch {
	case errors.As(err, &ae):
		return w.attention(ctx, ae.Reason)
	case err != nil:
		return err
	case reason != "":
		return w.attention(ctx, reason)
	}
	return w.signExecute(ctx)
}
