package delivery

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/evm"
)

// DeployExecutor deploys a SettleExecutor owned by the treasury on chain
// id, from the treasury, and waits until it is mined and verified. The
// nonce comes from treasury_nonces under its lock like a payout's, so it
// is safe while `settle delivery` runs; the signed creation is re-sent
// until mined, because an unmined nonce would block every later payout.
func (e *Executor) DeployExecutor(ctx context.Context, id uint64) (common.Address, error) {
	c, ok := e.chains[id]
	if !ok {
		return common.Address{}, fmt.Errorf("chain %d is not configured for delivery", id)
	}
	if err := c.verify(ctx, e.from); err != nil {
		return common.Address{}, err
	}
	data := evm.DeployData(e.from)
	gas, err := c.client.EstimateGas(ctx, ethereum.CallMsg{From: e.from, Data: data})
	if err != nil {
		return common.Address{}, fmt.Errorf("estimating executor deployment: %w", err)
	}
	gas += gas / 4
	f, err := c.currentFees(ctx)
	if err != nil {
		return common.Address{}, err
	}
	var signed []byte
	var hash common.Hash
	var addr common.Address
	err = pgx.BeginFunc(ctx, e.pg, func(tx pgx.Tx) error {
		nonce, err := e.takeNonce(ctx, tx, c, nil)
		if err != nil {
			return err
		}
		t, err := types.SignNewTx(e.key, c.signer, &types.DynamicFeeTx{ChainID: new(big.Int).SetUint64(id), Nonce: nonce,
			GasTipCap: f.tip, GasFeeCap: f.cap, Gas: gas, Data: data})
		if err != nil {
			return fmt.Errorf("signing executor deployment: %w", err)
		}
		if signed, err = encodeTx(t); err != nil {
			return err
		}
		hash, addr = t.Hash(), crypto.CreateAddress(e.from, nonce)
		return nil
	})
	if err != nil {
		return common.Address{}, fmt.Errorf("signing executor deployment: %w", err)
	}
	t, err := decodeTx(signed)
	if err != nil {
		return common.Address{}, err
	}
	e.logger.InfoContext(ctx, "deploying executor", "chain_id", id, "tx_hash", hash.Hex(), "address", addr.Hex(), "nonce", t.Nonce())
	for {
		if err := c.client.SendTransaction(ctx, t); err != nil && !benignSendError(err) && !nonceTooLow(err) {
			e.logger.WarnContext(ctx, "sending executor deployment failed; retrying", "chain_id", id, "err", err)
		}
		r, _, err := c.receipt(ctx, []common.Hash{hash})
		if err != nil {
			return common.Address{}, err
		}
		if r != nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return common.Address{}, fmt.Errorf("executor deployment %s reverted", hash.Hex())
			}
			if err := evm.Verify(ctx, c.client, addr, e.from); err != nil {
				return common.Address{}, err
			}
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return common.Address{}, fmt.Errorf("waiting for executor deployment %s (nonce %d is taken: rerun the command to keep sending it): %w",
				hash.Hex(), t.Nonce(), ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
