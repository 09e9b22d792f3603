package evm

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/driver"
)

// Sign signs one transaction of payout p from the treasury, with the next
// nonce from treasury_nonces taken in tx after check (nil: none) passed
// under the nonce lock:
//
//   - Main of a plain payout: the ERC-20 transfer of the amount.
//   - Setup of a call payout: the transfer of the amount to its runner, a
//     fresh address with no code that commits to the call (see
//     contracts/SettleExecutor.sol), so the funds there can only ever run
//     this payout's call. Nothing is approved to anyone.
//   - Main of a call payout: the execute of its funded runner, which moves
//     no treasury funds: the runner approves, calls, revokes and returns
//     what the call left, all in this one transaction.
//
// An estimate that fails (no tokens, no gas) burns no nonce. What cannot
// be delivered here at all is a *driver.AttentionError.
func (d *Driver) Sign(ctx context.Context, tx pgx.Tx, p driver.Payout, stage driver.Stage, check func() error) (driver.Signed, error) {
	token, to := common.HexToAddress(p.Token), common.HexToAddress(p.To)
	switch {
	case p.Calldata == nil:
		data := transferData(to, p.Amount)
		gas, err := d.estimate(ctx, d.from, &token, data)
		if err != nil {
			return driver.Signed{}, fmt.Errorf("transfer of %s to %s: %w", p.Amount, to.Hex(), err)
		}
		return d.sign(ctx, tx, check, token, data, gas)
	case stage == driver.Setup:
		if d.executor == nil {
			return driver.Signed{}, driver.Attention(fmt.Sprintf("chain %d has no executor_address: a payout with calldata cannot be delivered there (deploy one with `settle delivery deploy`)", d.id))
		}
		call := d.call(p, d.callGas)
		runner, err := RunnerAddress(*d.executor, d.from, call)
		if err != nil {
			return driver.Signed{}, err
		}
		// The key makes a used address impossible in theory; a runner
		// address with a nonce or code means something is badly wrong,
		// and funding it would lose the amount.
		if used, err := d.accountUsed(ctx, runner); err != nil || used {
			if err != nil {
				return driver.Signed{}, err
			}
			return driver.Signed{}, driver.Attention(fmt.Sprintf("runner address %s of payout %d is already used on chain %d; not funding it", runner.Hex(), p.ID, d.id))
		}
		data := transferData(runner, p.Amount)
		gas, err := d.estimate(ctx, d.from, &token, data)
		if err != nil {
			return driver.Signed{}, fmt.Errorf("funding runner %s with %s: %w", runner.Hex(), p.Amount, err)
		}
		s, err := d.sign(ctx, tx, check, token, data, gas)
		s.Runner, s.CallGas = hexAddr(runner), call.CallGas
		return s, err
	default:
		runner := common.HexToAddress(p.Runner)
		if d.executor == nil {
			return driver.Signed{}, driver.Attention(fmt.Sprintf("chain %d has no executor_address any more, but payout %d funded runner %s there", d.id, p.ID, runner.Hex()))
		}
		call := d.call(p, p.CallGas)
		if got, err := RunnerAddress(*d.executor, d.from, call); err != nil || got != runner {
			// A changed executor_address: the funds are at a runner only
			// the old executor can run.
			return driver.Signed{}, driver.Attention(fmt.Sprintf("payout %d funded runner %s, but executor %s would run it at %s (executor_address changed?)",
				p.ID, runner.Hex(), d.executor.Hex(), got.Hex()))
		}
		data, err := ExecuteData(call)
		if err != nil {
			return driver.Signed{}, err
		}
		gas, err := d.estimate(ctx, d.from, d.executor, data)
		if err != nil {
			// The merchant's call cannot make execute revert (the runner
			// catches it); a revert here is ours: the funding is not
			// visible yet, or the token refuses the runner. Retried,
			// never sent blind.
			return driver.Signed{}, fmt.Errorf("executing runner %s: %w", runner.Hex(), err)
		}
		return d.sign(ctx, tx, check, *d.executor, data, gas)
	}
}

// call is payout p's merchant call as its runner commits to it.
func (d *Driver) call(p driver.Payout, callGas uint64) Call {
	return Call{Key: PayoutKey(p.SessionID, p.Kind, p.ID), Token: common.HexToAddress(p.Token), Amount: p.Amount,
		Target: common.HexToAddress(p.To), Data: p.Calldata, CallGas: callGas}
}

// sign prices, allocates a nonce for, signs and encodes a transaction from
// the treasury to `to`.
func (d *Driver) sign(ctx context.Context, tx pgx.Tx, check func() error, to common.Address, data []byte, gas uint64) (driver.Signed, error) {
	f, err := d.currentFees(ctx)
	if err != nil {
		return driver.Signed{}, err
	}
	nonce, err := d.takeNonce(ctx, tx, check)
	if err != nil {
		return driver.Signed{}, err
	}
	t, err := d.signTx(d.key, nonce, &to, data, nil, gas, f)
	if err != nil {
		return driver.Signed{}, err
	}
	s, err := stored(d.from, t)
	return driver.Signed{Tx: s, Attrs: []any{"nonce", nonce}}, err
}

// Bump replaces stuck transaction t with one of the same nonce, gas and
// call and fees at least 25% higher, capped at the chain's ceiling. The
// new signing's Prior are t's hashes, since any of them may still be the
// one that is mined. When no replacement fits under the ceiling (nodes
// take one only at 10% more in tip and cap) it returns a
// *driver.FeeCeilingError; age, how long t has been unmined, is for its
// reason.
func (d *Driver) Bump(ctx context.Context, t driver.Tx, age time.Duration) (driver.Signed, error) {
	old, err := decodeTx(t.Raw)
	if err != nil {
		return driver.Signed{}, err
	}
	if old.To() == nil || old.Nonce() != t.Nonce {
		return driver.Signed{}, fmt.Errorf("stored transaction %s does not match its nonce %d", old.Hash().Hex(), t.Nonce)
	}
	now, err := d.currentFees(ctx)
	if err != nil {
		return driver.Signed{}, err
	}
	prev := fees{tip: old.GasTipCap(), cap: old.GasFeeCap()}
	f := clamp(bumpFees(prev, now), d.maxFee)
	if !replaces(f, prev) {
		return driver.Signed{}, &driver.FeeCeilingError{Reason: fmt.Sprintf("unmined for %s at fee cap %s wei (tip %s); the chain's fee ceiling %s wei allows no replacement: nonce %d blocks later payouts",
			age.Round(time.Second), prev.cap, prev.tip, d.maxFee, old.Nonce())}
	}
	tx, err := d.signTx(d.key, old.Nonce(), old.To(), old.Data(), nil, old.Gas(), f)
	if err != nil {
		return driver.Signed{}, err
	}
	s, err := stored(d.from, tx)
	s.Prior = t.Hashes()
	return driver.Signed{Tx: s, Attrs: []any{"replaces", old.Hash().Hex(), "nonce", tx.Nonce(), "tip", f.tip, "fee_cap", f.cap}}, err
}

// signTx signs a dynamic-fee transaction with key.
func (d *Driver) signTx(key *ecdsa.PrivateKey, nonce uint64, to *common.Address, data []byte, value *big.Int, gas uint64, f fees) (*types.Transaction, error) {
	tx, err := types.SignNewTx(key, d.signer, &types.DynamicFeeTx{
		ChainID:   new(big.Int).SetUint64(d.id),
		Nonce:     nonce,
		GasTipCap: f.tip,
		GasFeeCap: f.cap,
		Gas:       gas,
		To:        to,
		Value:     value,
		Data:      data,
	})
	if err != nil {
		return nil, fmt.Errorf("signing transaction: %w", err)
	}
	return tx, nil
}

// Outcome judges what an included transaction of payout p did: "" when
// the stage succeeded (for Main: the payout is delivered), else why the
// payout reads as reverted, with the revert reason replayed. A call
// payout's execute succeeds whether or not the merchant's call did: the
// runner's Executed event says which, and that the funds the call did not
// take are back in the treasury. A failed funding, or an execute that
// itself failed with the funds still at the runner, needs an operator,
// not a refund: a *driver.AttentionError.
func (d *Driver) Outcome(ctx context.Context, p driver.Payout, stage driver.Stage, t driver.Tx, in *driver.Inclusion) (string, error) {
	r, ok := in.Receipt.(*types.Receipt)
	if !ok {
		return "", fmt.Errorf("inclusion of %s carries no EVM receipt", in.Hash)
	}
	if stage == driver.Setup {
		if r.Status == types.ReceiptStatusSuccessful {
			return "", nil
		}
		// A funding that reverted moved nothing, and the reason is ours
		// (the treasury's balance, a paused token), not the merchant's.
		tx, _ := decodeTx(t.Raw)
		return "", driver.Attention("funding of runner " + common.HexToAddress(p.Runner).Hex() + " " + d.revertReason(ctx, tx, d.from, r))
	}
	if p.Calldata != nil {
		failed, err := callOutcome(p, r)
		if err != nil {
			return "", driver.Attention(err.Error())
		}
		if failed != "" || r.Status == types.ReceiptStatusSuccessful {
			return failed, nil
		}
	} else if r.Status == types.ReceiptStatusSuccessful {
		return "", nil
	}
	// The stored bytes carry the same call as every signing of the nonce.
	tx, _ := decodeTx(t.Raw)
	return d.revertReason(ctx, tx, d.from, r), nil
}

// callOutcome reads the runner's report from the receipt of a call
// payout's execute: "" when the merchant's call took funds (mined), else
// why the payout reads as reverted (the call reverted or took nothing; the
// runner returned the whole amount in the same transaction, so a refund
// cannot pay twice). An error means the execute itself failed.
func callOutcome(p driver.Payout, r *types.Receipt) (string, error) {
	if p.Runner == "" {
		return "", fmt.Errorf("payout %d has calldata but no runner_address", p.ID)
	}
	runner := common.HexToAddress(p.Runner)
	if r.Status != types.ReceiptStatusSuccessful {
		return "", fmt.Errorf("execute %s reverted in block %s: the funds are still at runner %s (`settle payouts retry %d` signs a new execute)",
			r.TxHash.Hex(), r.BlockNumber, runner.Hex(), p.ID)
	}
	ex, err := ParseExecuted(r, runner)
	if err != nil {
		return "", fmt.Errorf("execute %s of payout %d: %w", r.TxHash.Hex(), p.ID, err)
	}
	switch {
	case !ex.Success:
		return fmt.Sprintf("merchant call reverted (%s); runner returned %s to the treasury in %s", Reason(ex.Result), ex.Returned, r.TxHash.Hex()), nil
	case ex.Delivered.Sign() == 0:
		return fmt.Sprintf("merchant call took nothing; runner returned %s to the treasury in %s", ex.Returned, r.TxHash.Hex()), nil
	}
	return "", nil
}
