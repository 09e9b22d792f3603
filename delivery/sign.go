package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/settle-dev/settle/delivery/driver"
)

// errWait means the payout must wait for another one; not a failure.
var errWait = errors.New("waiting for another payout")

// checkFunds refuses to sign when the treasury's token balance does not
// cover this payout on top of the others already signed but maybe not
// mined: such a transaction would revert on chain, which for a delivery
// reads as the merchant's refusal. It runs under the driver's signing
// lock, so it sees every signing committed before ours.
func (w *work) checkFunds(ctx context.Context) error {
	p := w.p
	bal, err := w.d.Balance(ctx, p.token)
	if err != nil {
		return err
	}
	others, err := inFlight(ctx, w.tx, p)
	if err != nil {
		return err
	}
	if need := new(big.Int).Add(others, p.amount); bal.Cmp(need) < 0 {
		return fmt.Errorf("treasury holds %s of token %s; payout needs %s on top of %s in flight", bal, p.token, p.amount, others)
	}
	return nil
}

// signTransfer signs and stores a plain payout's transfer.
func (w *work) signTransfer(ctx context.Context) error {
	p := w.p
	s, err := w.d.Sign(ctx, w.tx, p.payout(), driver.Main, func() error { return w.checkFunds(ctx) })
	if err != nil {
		return w.signFailed(ctx, err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', from_address = $2, nonce = $3, tx_hash = $4, raw_tx = $5,
		sent_at = now(), error = NULL WHERE id = $1`, p.id, s.From, int64(s.Nonce), s.Hash, s.Raw); err != nil {
		return fmt.Errorf("storing signed transfer: %w", err)
	}
	w.signed("transfer", s, outcomeSigned)
	return nil
}

// signFund signs and stores a call payout's setup: on EVM the transfer of
// its amount to its runner, which then can only ever run this payout's
// call.
func (w *work) signFund(ctx context.Context) error {
	p := w.p
	s, err := w.d.Sign(ctx, w.tx, p.payout(), driver.Setup, func() error { return w.checkFunds(ctx) })
	if err != nil {
		return w.signFailed(ctx, err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET from_address = $2, fund_nonce = $3, fund_tx_hash = $4, fund_raw_tx = $5,
		runner_address = $6, call_gas = $7, fund_prior_tx_hashes = '{}', fund_sent_at = now(), error = NULL WHERE id = $1`,
		p.id, s.From, int64(s.Nonce), s.Hash, s.Raw, s.Runner, int64(s.CallGas)); err != nil {
		return fmt.Errorf("storing signed funding: %w", err)
	}
	w.signed("fund", s, outcomeSigned)
	return nil
}

// signExecute signs and stores the main transaction of a call payout
// whose setup is included. It moves no treasury funds (the setup did), so
// no funds are checked.
func (w *work) signExecute(ctx context.Context) error {
	p := w.p
	s, err := w.d.Sign(ctx, w.tx, p.payout(), driver.Main, nil)
	if err != nil {
		return w.signFailed(ctx, err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', nonce = $2, tx_hash = $3, raw_tx = $4, prior_tx_hashes = '{}',
		sent_at = now(), error = NULL, attention_sent = false WHERE id = $1`, p.id, int64(s.Nonce), s.Hash, s.Raw); err != nil {
		return fmt.Errorf("storing signed execute: %w", err)
	}
	w.signed("execute", s, outcomeSigned)
	return nil
}

// signFailed parks the payout when the driver says it cannot be delivered
// as it is, turns errWait into a counted, silent wait (the caller's
// transaction then commits nothing but the unchanged rows), and returns
// any other error.
func (w *work) signFailed(ctx context.Context, err error) error {
	var ae *driver.AttentionError
	switch {
	case errors.As(err, &ae):
		return w.attention(ctx, ae.Reason)
	case errors.Is(err, errWait):
		w.res.Waiting++
		return nil
	}
	return err
}

// attention parks the payout in needs_attention with reason: it cannot
// make progress on its own, and retrying blindly could lose funds or block
// later nonces. An operator looks at it (`settle payouts list`).
func (w *work) attention(ctx context.Context, reason string) error {
	reason = w.e.redact(reason)
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'needs_attention', error = $2 WHERE id = $1`, w.p.id, reason); err != nil {
		return fmt.Errorf("moving payout %d to needs_attention: %w", w.p.id, err)
	}
	w.events = append(w.events, event{outcome: outcomeAttention, step: w.step(), attrs: []any{"reason", reason}})
	return nil
}
