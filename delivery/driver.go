package delivery

import (
	"context"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/delivery/driver"
	"github.com/settle-dev/settle/delivery/evm"
)

// Driver is what the executor needs from one chain: everything that
// differs between chain families (nonces, fees and their bumps, signing,
// receipts, finality) is behind it, and the executor works only on the
// opaque transactions it returns, which it stores before they are
// broadcast. delivery/evm implements it; a Tron or Solana driver
// implements the same methods.
//
// The methods that sign take the executor's Postgres transaction: a
// driver that allocates a sequence number (the EVM treasury_nonces row)
// does so in it, so the allocation and the stored signed bytes commit
// together or not at all.
type Driver interface {
	// Verify checks that the node serves the configured chain and that
	// what the driver relies on there (a contract) is in place; the
	// executor skips a chain's payouts while it fails.
	Verify(ctx context.Context) error
	// Treasury is the address that pays, in the form Postgres holds.
	Treasury() string
	// Native is the coin that pays the chain's fees.
	Native() driver.Token
	// Address checks an address read from Postgres and returns it in the
	// form Postgres holds; Amount checks that an amount can be sent.
	Address(s string) (string, error)
	Amount(v *big.Int) error

	// Sign signs payout p's transaction of stage, after check (nil: none)
	// passed under the lock that orders the treasury's signings. A
	// payout that cannot be delivered on this chain is a
	// *driver.AttentionError.
	Sign(ctx context.Context, tx pgx.Tx, p driver.Payout, stage driver.Stage, check func() error) (driver.Signed, error)
	// Bump replaces stuck t with a signing that replaces it on chain
	// (same nonce, higher fees), whose Prior are t's hashes. None fits
	// under the chain's fee ceiling: a *driver.FeeCeilingError.
	Bump(ctx context.Context, t driver.Tx, age time.Duration) (driver.Signed, error)
	// Broadcast sends t's stored bytes, byte for byte. A node that has
	// them already is no error; a refusal for a used nonce wraps
	// driver.ErrNonceUsed.
	Broadcast(ctx context.Context, t driver.Tx) error
	// Find returns the inclusion of any of t's signings, nil when none is
	// included, or driver.ErrNonceTaken when a stranger used its nonce.
	Find(ctx context.Context, t driver.Tx) (*driver.Inclusion, error)
	// Outcome judges an included transaction of payout p: "" when it did
	// its job, else why the payout reads as reverted. A
	// *driver.AttentionError parks the payout for an operator.
	Outcome(ctx context.Context, p driver.Payout, stage driver.Stage, t driver.Tx, in *driver.Inclusion) (string, error)
	// Block reads the block at number on the node's current chain (an
	// empty Hash: there is none); Finalized is the highest final block.
	Block(ctx context.Context, number uint64) (driver.Block, error)
	Finalized(ctx context.Context) (uint64, error)
	// Balance is the treasury's balance of token ("": the native coin).
	Balance(ctx context.Context, token string) (*big.Int, error)

	// Sweep signs sweep s's next transaction: with topUp, the treasury's
	// gas top-up of the receiver if it needs one, else the receiver's
	// transfer to the treasury.
	Sweep(ctx context.Context, tx pgx.Tx, s driver.Sweep, topUp bool) (driver.SweepTx, error)
}

// The EVM driver is the one delivery builds from Config today.
var _ Driver = (*evm.Driver)(nil)
