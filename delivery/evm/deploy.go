package evm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/delivery/driver"
)

// DeployExecutor deploys a SettleExecutor owned by the treasury, from the
// treasury, and waits until it is mined and verified. The nonce comes from
// treasury_nonces under its lock like a payout's, so it is safe while
// `settle delivery` runs; the signed creation is re-sent until mined,
// because an unmined nonce would block every later payout.
func (d *Driver) DeployExecutor(ctx context.Context, pg *pgxpool.Pool, logger *slog.Logger) (common.Address, error) {
	if err := d.Verify(ctx); err != nil {
		return common.Address{}, err
	}
	gas, err := d.estimate(ctx, d.from, nil, DeployData(d.from))
	if err != nil {
		return common.Address{}, fmt.Errorf("estimating executor deployment: %w", err)
	}
	f, err := d.currentFees(ctx)
	if err != nil {
		return common.Address{}, err
	}
	var t *types.Transaction
	var addr common.Address
	err = pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
		nonce, err := d.takeNonce(ctx, tx, nil)
		if err != nil {
			return err
		}
		if t, err = d.signTx(d.key, nonce, nil, DeployData(d.from), nil, gas, f); err != nil {
			return fmt.Errorf("signing executor deployment: %w", err)
		}
		addr = crypto.CreateAddress(d.from, nonce)
		return nil
	})
	if err != nil {
		return common.Address{}, fmt.Errorf("signing executor deployment: %w", err)
	}
	st, err := stored(d.from, t)
	if err != nil {
		return common.Address{}, err
	}
	logger.InfoContext(ctx, "deploying executor", "chain_id", d.id, "tx_hash", st.Hash, "address", addr.Hex(), "nonce", t.Nonce())
	for {
		if err := d.Broadcast(ctx, st); err != nil && !errors.Is(err, driver.ErrNonceUsed) {
			logger.WarnContext(ctx, "sending executor deployment failed; retrying", "chain_id", d.id, "err", err)
		}
		r, _, err := d.receipt(ctx, []common.Hash{t.Hash()})
		if err != nil {
			return common.Address{}, err
		}
		if r != nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return common.Address{}, fmt.Errorf("executor deployment %s reverted", st.Hash)
			}
			if err := Verify(ctx, d.client, addr, d.from); err != nil {
				return common.Address{}, err
			}
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return common.Address{}, fmt.Errorf("waiting for executor deployment %s (nonce %d is taken: rerun the command to keep sending it): %w",
				st.Hash, t.Nonce(), ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
