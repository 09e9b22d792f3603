package evm

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// takeNonce takes the treasury's next nonce on the driver's chain under
// the row lock of treasury_nonces, after check (nil: none) passed under
// that lock. The lock is held until tx ends, so the transaction that
// stores the signed bytes also advances the nonce, and no two signings
// (payouts, sweep gas, deployments) can share a nonce.
func (d *Driver) takeNonce(ctx context.Context, tx pgx.Tx, check func() error) (uint64, error) {
	stored, err := lockNonce(ctx, tx, d.id, d.treasury)
	if err != nil {
		return 0, err
	}
	if check != nil {
		if err := check(); err != nil {
			return 0, err
		}
	}
	pending, err := d.client.PendingNonceAt(ctx, d.from)
	if err != nil {
		return 0, fmt.Errorf("getting pending nonce of %s: %w", d.from, err)
	}
	if pending > stored {
		// Never reuse a nonce the chain has seen used, e.g. by a
		// transaction sent with the treasury key outside settle.
		if stored > 0 {
			d.logger.WarnContext(ctx, "treasury nonce behind the chain; jumping forward",
				"chain_id", d.id, "stored", stored, "chain_pending", pending)
		}
		stored = pending
	}
	if err := storeNonce(ctx, tx, d.id, d.treasury, stored+1); err != nil {
		return 0, err
	}
	return stored, nil
}

// lockNonce locks the treasury's nonce row on a chain, creating it when
// missing, and returns the stored next nonce. The lock is held until the
// transaction ends, which serialises all signing per chain and treasury.
func lockNonce(ctx context.Context, tx pgx.Tx, chainID uint64, from string) (uint64, error) {
	const sel = `SELECT next_nonce FROM treasury_nonces WHERE chain_id = $1 AND address = $2 FOR UPDATE`
	var next int64
	err := tx.QueryRow(ctx, sel, int64(chainID), from).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		// Start at 0; the caller jumps to the chain's pending nonce. Two
		// executors inserting at once: the second waits, then does nothing.
		if _, err = tx.Exec(ctx, `INSERT INTO treasury_nonces (chain_id, address, next_nonce) VALUES ($1, $2, 0)
			ON CONFLICT DO NOTHING`, int64(chainID), from); err != nil {
			return 0, fmt.Errorf("creating nonce row of chain %d: %w", chainID, err)
		}
		err = tx.QueryRow(ctx, sel, int64(chainID), from).Scan(&next)
	}
	if err != nil {
		return 0, fmt.Errorf("locking nonce of chain %d: %w", chainID, err)
	}
	return uint64(next), nil
}

func storeNonce(ctx context.Context, tx pgx.Tx, chainID uint64, from string, next uint64) error {
	if _, err := tx.Exec(ctx, `UPDATE treasury_nonces SET next_nonce = $3 WHERE chain_id = $1 AND address = $2`,
		int64(chainID), from, int64(next)); err != nil {
		return fmt.Errorf("storing next nonce of chain %d: %w", chainID, err)
	}
	return nil
}
