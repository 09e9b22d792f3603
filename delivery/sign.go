package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/evm"
)

// spend says what a transaction does with the payout's amount, which
// decides the checks made under the nonce lock before it is signed.
type spend int

const (
	// spendNothing: an execute moves no treasury tokens (its runner was
	// funded before).
	spendNothing spend = iota
	// spendAmount: a transfer or a runner's funding takes the amount from
	// the treasury.
	spendAmount
)

// errWait means the payout must wait for another one; not a failure.
var errWait = errors.New("waiting for another payout")

// allocate takes the next treasury nonce on the payout's chain, after
// checking what s requires under the nonce lock (so the check sees every
// signing committed before ours).
func (w *work) allocate(ctx context.Context, s spend) (uint64, error) {
	return w.e.takeNonce(ctx, w.tx, w.c, func() error {
		if s == spendAmount {
			return w.checkFunds(ctx)
		}
		return nil
	})
}

// takeNonce takes the treasury's next nonce on chain c under the row lock
// of treasury_nonces, after check (nil: none) passed under that lock. The
// lock is held until tx ends, so the transaction that stores the signed
// bytes also advances the nonce, and no two signings (payouts, sweep gas,
// deployments) can share a nonce.
func (e *Executor) takeNonce(ctx context.Context, tx pgx.Tx, c *chain, check func() error) (uint64, error) {
	from := e.from
	stored, err := lockNonce(ctx, tx, c.id, from)
	if err != nil {
		return 0, err
	}
	if check != nil {
		if err := check(); err != nil {
			return 0, err
		}
	}
	pending, err := c.client.PendingNonceAt(ctx, from)
	if err != nil {
		return 0, fmt.Errorf("getting pending nonce of %s: %w", from, err)
	}
	if pending > stored {
		// Never reuse a nonce the chain has seen used, e.g. by a
		// transaction sent with the treasury key outside settle.
		if stored > 0 {
			e.logger.WarnContext(ctx, "treasury nonce behind the chain; jumping forward",
				"chain_id", c.id, "stored", stored, "chain_pending", pending)
		}
		stored = pending
	}
	if err := storeNonce(ctx, tx, c.id, from, stored+1); err != nil {
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

// signFund signs and stores the transfer of a call payout's amount to its
// runner: a fresh address with no code, which commits to the call (see
// contracts/SettleExecutor.sol), so the funds there can only ever run this
// payout's call. Nothing is approved to anyone.
func (w *work) signFund(ctx context.Context) error {
	p := w.p
	if w.c.executor == nil {
		return w.attention(ctx, fmt.Sprintf("chain %d has no executor_address: a payout with calldata cannot be delivered there (deploy one with `settle delivery deploy`)", p.chainID))
	}
	call := w.call(w.c.callGas)
	runner, err := evm.RunnerAddress(*w.c.executor, w.e.from, call)
	if err != nil {
		return err
	}
	// The key makes a used address impossible in theory; a runner address
	// with a nonce or code means something is badly wrong, and funding it
	// would lose the amount.
	if used, err := w.c.accountUsed(ctx, runner); err != nil || used {
		if err != nil {
			return err
		}
		return w.attention(ctx, fmt.Sprintf("runner address %s of payout %d is already used on chain %d; not funding it", runner.Hex(), p.id, p.chainID))
	}
	data := transferData(runner, p.amount)
	gas, err := w.c.estimate(ctx, w.e.from, p.token, data)
	if err != nil {
		return fmt.Errorf("funding runner %s with %s: %w", runner.Hex(), p.amount, err)
	}
	tx, raw, err := w.sign(ctx, spendAmount, p.token, data, gas)
	if err != nil {
		return w.waitOrFail(err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET from_address = $2, fund_nonce = $3, fund_tx_hash = $4, fund_raw_tx = $5,
		runner_address = $6, call_gas = $7, fund_prior_tx_hashes = '{}', fund_sent_at = now(), error = NULL WHERE id = $1`,
		p.id, hexAddr(w.e.from), int64(tx.Nonce()), tx.Hash().Hex(), raw, hexAddr(runner), int64(call.CallGas)); err != nil {
		return fmt.Errorf("storing signed funding: %w", err)
	}
	w.signed("fund", tx, outcomeSigned)
	return nil
}

// call is the payout's merchant call as its runner commits to it.
func (w *work) call(callGas uint64) evm.Call {
	p := w.p
	return evm.Call{Key: evm.PayoutKey(p.sessionID, p.kind, p.id), Token: p.token, Amount: p.amount,
		Target: p.to, Data: p.calldata, CallGas: callGas}
}

// signExecute signs and stores the execute transaction of a call payout
// whose runner funding is mined. The execute moves no treasury funds: the
// runner approves, calls, revokes and returns what the call left, all in
// this one transaction.
func (w *work) signExecute(ctx context.Context) error {
	p := w.p
	if w.c.executor == nil {
		return w.attention(ctx, fmt.Sprintf("chain %d has no executor_address any more, but payout %d funded runner %s there", p.chainID, p.id, p.runner.Hex()))
	}
	call := w.call(p.callGas)
	if runner, err := evm.RunnerAddress(*w.c.executor, w.e.from, call); err != nil || runner != *p.runner {
		// A changed executor_address: the funds are at a runner only the
		// old executor can run.
		return w.attention(ctx, fmt.Sprintf("payout %d funded runner %s, but executor %s would run it at %s (executor_address changed?)",
			p.id, p.runner.Hex(), w.c.executor.Hex(), runner.Hex()))
	}
	data, err := evm.ExecuteData(call)
	if err != nil {
		return err
	}
	gas, err := w.c.estimate(ctx, w.e.from, *w.c.executor, data)
	if err != nil {
		// The merchant's call cannot make execute revert (the runner
		// catches it); a revert here is ours: the funding is not visible
		// yet, or the token refuses the runner. Retried, never sent blind.
		return fmt.Errorf("executing runner %s: %w", p.runner.Hex(), err)
	}
	tx, raw, err := w.sign(ctx, spendNothing, *w.c.executor, data, gas)
	if err != nil {
		return w.waitOrFail(err)
	}
	if _, err := w.tx.Exec(ctx, `UPDATE payouts SET status = 'sent', nonce = $2, tx_hash = $3, raw_tx = $4, prior_tx_hashes = '{}',
		sent_at = now(), error = NULL, attention_sent = false WHERE id = $1`, p.id, int64(tx.Nonce()), tx.Hash().Hex(), raw); err != nil {
		return fmt.Errorf("storing signed execute: %w", err)
	}
	w.signed("execute", tx, outcomeSigned)
	return nil
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
