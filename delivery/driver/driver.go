// Package driver holds the values that pass between the delivery executor
// and a chain driver (delivery/evm today; Tron and Solana later). The
// executor declares the Driver interface where it uses it (package
// delivery); this leaf package exists so that a driver can speak the same
// types without importing the executor.
//
// Everything here is chain-agnostic: addresses and hashes are the chain's
// own text, amounts are integers in the token's smallest unit, and a
// signed transaction is opaque bytes the executor stores before it is
// broadcast and only ever hands back to the driver unchanged.
package driver

import (
	"errors"
	"math/big"
)

// Payout is what a driver needs to know of a payout to sign its
// transactions and judge their outcome.
type Payout struct {
	ID        int64
	SessionID string
	Kind      string // delivery or refund
	Token     string
	To        string
	Amount    *big.Int
	// Calldata is nil for a plain transfer; a payout with calldata first
	// signs a setup transaction (Setup), then its main one.
	Calldata []byte
	// Runner and CallGas are what the setup transaction committed to (an
	// EVM runner address and its call's gas); set once it is signed.
	Runner  string
	CallGas uint64
}

// Stage is which of a payout's transactions is signed or judged.
type Stage int

const (
	// Main is the transaction that pays: a plain transfer, or the
	// execute of a call payout.
	Main Stage = iota
	// Setup is what a call payout needs before its main transaction (on
	// EVM: the funding of its runner).
	Setup
)

// Tx is a signed transaction as the executor stores it.
type Tx struct {
	// From is the signer (the treasury, or a receiver for a sweep).
	From string
	// Nonce is the driver's replay guard (the EVM nonce); every signing
	// of one payout step shares it. A driver without nonces leaves it 0.
	Nonce uint64
	// Hash identifies the newest signing; Raw are its bytes, broadcast
	// byte for byte.
	Hash string
	Raw  []byte
	// Prior are earlier signings of the same step (fee bumps), any of
	// which may be the one that is included.
	Prior []string
}

// Hashes are every signing of t, newest first.
func (t Tx) Hashes() []string { return append([]string{t.Hash}, t.Prior...) }

// Signed is a freshly signed payout transaction.
type Signed struct {
	Tx
	// Runner and CallGas are set by a Setup signing: what the main
	// transaction must match.
	Runner  string
	CallGas uint64
	// Attrs are extra log attributes (nonce, fees).
	Attrs []any
}

// Inclusion is where a transaction was included.
type Inclusion struct {
	// Hash is the signing that was included.
	Hash      string
	Block     int64
	BlockHash string
	Success   bool
	GasUsed   uint64
	// Receipt is the driver's own record, for its Outcome.
	Receipt any
}

// Block is a block on the node's current chain.
type Block struct {
	// Hash is empty when the node has no block at that height (any more).
	Hash string
	Time int64 // unix seconds
}

// Token is a coin or token the driver names, e.g. the native coin that
// pays a sweep's gas.
type Token struct {
	Address  string
	Symbol   string
	Decimals uint8
}

// Sweep is what a driver needs to know of a sweep: move Amount of Token
// from the receiver with derivation index Index to the treasury.
type Sweep struct {
	ID       int64
	Receiver string
	Token    string
	Index    uint32
	Amount   *big.Int
}

// SweepTx is a signed sweep transaction.
type SweepTx struct {
	Tx
	// GasAmount is set for the treasury's gas top-up of the receiver (in
	// the native coin's smallest unit); nil for the receiver's transfer.
	GasAmount *big.Int
}

// ErrNonceTaken means a transaction's nonce was used by a transaction that
// is none of its signings: re-signing with a new nonce could pay twice.
var ErrNonceTaken = errors.New("nonce used by another transaction")

// ErrNonceUsed means a node refused a broadcast because its nonce is used
// and none of the transaction's signings is known to be included.
var ErrNonceUsed = errors.New("nonce already used")

// AttentionError means the payout or sweep cannot progress on its own and
// retrying blindly could lose funds: the executor parks it for an operator
// with Reason.
type AttentionError struct{ Reason string }

func (e *AttentionError) Error() string { return e.Reason }

// Attention returns an *AttentionError.
func Attention(reason string) error { return &AttentionError{Reason: reason} }

// FeeCeilingError means a stuck transaction cannot be replaced: no higher
// fee fits under the chain's ceiling. The executor parks the payout with
// its transaction still followed.
type FeeCeilingError struct{ Reason string }

func (e *FeeCeilingError) Error() string { return e.Reason }
