// Package evm is the delivery executor's driver for EVM chains, and holds
// what delivery needs to know about them beyond plain ERC-20 calls.
//
// Driver implements delivery.Driver: it signs the treasury's dynamic-fee
// transactions with nonces from treasury_nonces (taken in the executor's
// Postgres transaction, so the nonce and the stored signed bytes commit
// together), bumps a stuck one under the same nonce up to the chain's fee
// ceiling, broadcasts stored bytes, finds receipts and judges them, reads
// finality and balances, and signs sweeps with the receivers' keys.
//
// The SettleExecutor contract (contracts/SettleExecutor.sol) runs merchant
// calldata without the treasury's authority; this package holds its
// compiled code, the address of each payout's runner, and the Executed
// event a runner leaves in its receipt.
package evm

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/settle-dev/settle/delivery/driver"
)

// Client is what the driver needs from a node; *ethclient.Client
// satisfies it.
type Client interface {
	ChainID(ctx context.Context) (*big.Int, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
	TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error)
	EstimateGas(ctx context.Context, msg ethereum.CallMsg) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	NonceAt(ctx context.Context, account common.Address, block *big.Int) (uint64, error)
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error)
	BalanceAt(ctx context.Context, account common.Address, block *big.Int) (*big.Int, error)
	CodeAt(ctx context.Context, account common.Address, block *big.Int) ([]byte, error)
}

// Finality says when a block is final on a chain: Depth blocks below the
// node's head, or, with Tag, at or below the node's "finalized" block.
type Finality struct {
	Depth uint64
	Tag   bool
}

// DefaultFinalityDepth is the depth of a chain configured with neither a
// depth nor the tag; it matches the reconciler's default.
const DefaultFinalityDepth = 12

// rpcTimeout bounds Verify's node calls.
const rpcTimeout = 10 * time.Second

// Config configures a Driver for one chain.
type Config struct {
	ChainID uint64
	Client  Client
	// Finality decides when a block is final; zero means
	// DefaultFinalityDepth.
	Finality Finality
	// Executor is the chain's SettleExecutor (nil: calls cannot be
	// delivered here), checked by Verify.
	Executor *common.Address
	// CallGas is the gas a merchant call gets; default DefaultCallGas.
	CallGas uint64
	// MaxFeePerGas is the ceiling of every transaction's fee cap in wei;
	// default DefaultMaxFeePerGas.
	MaxFeePerGas *big.Int
	// Treasury signs every payout, gas top-up and deployment.
	Treasury *ecdsa.PrivateKey
	// ReceiverKey derives a receiver's key for sweeping; nil: Sweep fails.
	ReceiverKey func(index uint32) (*ecdsa.PrivateKey, error)
	// FinalTTL is how long a read of the final block is reused, so a pass
	// over many payouts asks the node once.
	FinalTTL time.Duration
	// Logger receives debug lines about broadcasts and a warning when the
	// stored nonce is behind the chain; nil discards.
	Logger *slog.Logger
}

// Driver signs, sends and follows the treasury's transactions on one EVM
// chain. It implements delivery.Driver.
type Driver struct {
	id       uint64
	client   Client
	signer   types.Signer
	finality Finality
	executor *common.Address
	callGas  uint64
	// maxFee is the ceiling of a transaction's fee cap (wei per gas): no
	// signing or bump goes above it.
	maxFee      *big.Int
	key         *ecdsa.PrivateKey
	from        common.Address
	treasury    string // from, lowercase hex as stored
	receiverKey func(uint32) (*ecdsa.PrivateKey, error)
	finalTTL    time.Duration
	logger      *slog.Logger

	mu       sync.Mutex
	verified bool
	final    uint64
	finalAt  time.Time
}

// NewDriver checks cfg and returns a Driver.
func NewDriver(cfg Config) (*Driver, error) {
	if cfg.Client == nil || cfg.ChainID == 0 {
		return nil, fmt.Errorf("chain %d has no client", cfg.ChainID)
	}
	if cfg.Treasury == nil {
		return nil, fmt.Errorf("chain %d: no treasury key", cfg.ChainID)
	}
	if cfg.Executor != nil && *cfg.Executor == (common.Address{}) {
		return nil, fmt.Errorf("chain %d: executor address is zero", cfg.ChainID)
	}
	maxFee := DefaultMaxFeePerGas
	if cfg.MaxFeePerGas != nil {
		if cfg.MaxFeePerGas.Sign() <= 0 {
			return nil, fmt.Errorf("chain %d: max fee per gas must be positive", cfg.ChainID)
		}
		maxFee = cfg.MaxFeePerGas
	}
	f := cfg.Finality
	if !f.Tag && f.Depth == 0 {
		f.Depth = DefaultFinalityDepth
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	from := crypto.PubkeyToAddress(cfg.Treasury.PublicKey)
	return &Driver{
		id:          cfg.ChainID,
		client:      cfg.Client,
		signer:      types.LatestSignerForChainID(new(big.Int).SetUint64(cfg.ChainID)),
		finality:    f,
		executor:    cfg.Executor,
		callGas:     cmpOr(cfg.CallGas, DefaultCallGas),
		maxFee:      maxFee,
		key:         cfg.Treasury,
		from:        from,
		treasury:    hexAddr(from),
		receiverKey: cfg.ReceiverKey,
		finalTTL:    cfg.FinalTTL,
		logger:      logger,
	}, nil
}

func cmpOr(v, def uint64) uint64 {
	if v > 0 {
		return v
	}
	return def
}

func hexAddr(a common.Address) string { return strings.ToLower(a.Hex()) }

// Treasury is the address that signs every payout, lowercase hex.
func (d *Driver) Treasury() string { return d.treasury }

// Native is the chain's coin, which pays the gas.
func (d *Driver) Native() driver.Token {
	return driver.Token{Address: hexAddr(common.Address{}), Symbol: "native", Decimals: 18}
}

// Address checks that s is an EVM address and returns it in lowercase
// hex, the form Postgres holds.
func (d *Driver) Address(s string) (string, error) {
	if !common.IsHexAddress(s) {
		return "", fmt.Errorf("%q is not an EVM address", s)
	}
	return hexAddr(common.HexToAddress(s)), nil
}

// Amount rejects amounts no uint256 can hold.
func (d *Driver) Amount(v *big.Int) error { return checkAmount(v) }

// Verify checks once that the node serves the chain it is configured for
// (payouts signed for one chain id must not be sent to another chain's
// node) and that the configured executor is this build's, owned by the
// treasury.
func (d *Driver) Verify(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.verified {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	id, err := d.client.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("getting chain id: %w", err)
	}
	if !id.IsUint64() || id.Uint64() != d.id {
		return fmt.Errorf("node serves chain %s, configured as %d", id, d.id)
	}
	if d.executor != nil {
		if err := Verify(ctx, d.client, *d.executor, d.from); err != nil {
			return err
		}
	}
	d.verified = true
	return nil
}

// Finalized returns the highest block number that is final now.
func (d *Driver) Finalized(ctx context.Context) (uint64, error) {
	d.mu.Lock()
	if !d.finalAt.IsZero() && time.Since(d.finalAt) < d.finalTTL {
		defer d.mu.Unlock()
		return d.final, nil
	}
	d.mu.Unlock()
	var n *big.Int // the head
	if d.finality.Tag {
		n = big.NewInt(int64(rpc.FinalizedBlockNumber))
	}
	h, err := d.client.HeaderByNumber(ctx, n)
	if err != nil {
		return 0, fmt.Errorf("reading the final block: %w", err)
	}
	final := h.Number.Uint64()
	if !d.finality.Tag {
		final = max(final, d.finality.Depth) - d.finality.Depth
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.final, d.finalAt = final, time.Now()
	return final, nil
}

// Block returns the block at number on the node's current chain; its Hash
// is empty when the node has no such block (any more).
func (d *Driver) Block(ctx context.Context, number uint64) (driver.Block, error) {
	h, err := d.client.HeaderByNumber(ctx, new(big.Int).SetUint64(number))
	if errors.Is(err, ethereum.NotFound) {
		return driver.Block{}, nil
	}
	if err != nil {
		return driver.Block{}, fmt.Errorf("reading block %d: %w", number, err)
	}
	return driver.Block{Hash: h.Hash().Hex(), Time: int64(h.Time)}, nil
}

// Balance reads the treasury's balance of token at the latest block; an
// empty token is the native coin (wei).
func (d *Driver) Balance(ctx context.Context, token string) (*big.Int, error) {
	if token == "" {
		wei, err := d.client.BalanceAt(ctx, d.from, nil)
		if err != nil {
			return nil, fmt.Errorf("reading native balance of %s: %w", d.from, err)
		}
		return wei, nil
	}
	return d.tokenBalance(ctx, common.HexToAddress(token), d.from)
}

// tokenBalance reads an ERC-20 balance at the latest block.
func (d *Driver) tokenBalance(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	out, err := d.client.CallContract(ctx, ethereum.CallMsg{To: &token, Data: balanceOfData(owner)}, nil)
	if err != nil {
		return nil, fmt.Errorf("calling balanceOf(%s) on %s: %w", owner, token, err)
	}
	if len(out) != 32 {
		return nil, fmt.Errorf("balanceOf(%s) on %s returned %d bytes, want 32", owner, token, len(out))
	}
	return new(big.Int).SetBytes(out), nil
}

// Broadcast hands stored bytes to the node. An answer that the node has
// them already is no failure, nor is a used nonce when one of t's signings
// has a receipt; a used nonce without one wraps driver.ErrNonceUsed.
func (d *Driver) Broadcast(ctx context.Context, t driver.Tx) error {
	tx, err := decodeTx(t.Raw)
	if err != nil {
		return err
	}
	err = d.client.SendTransaction(ctx, tx)
	switch {
	case err == nil:
		return nil
	case benignSendError(err):
		d.logger.DebugContext(ctx, "node already has the transaction", "chain_id", d.id, "tx_hash", t.Hash)
		return nil
	case nonceTooLow(err):
		if r, _, rerr := d.receipt(ctx, hashes(t)); rerr == nil && r != nil {
			d.logger.DebugContext(ctx, "transaction already mined", "chain_id", d.id, "tx_hash", t.Hash)
			return nil
		}
		return fmt.Errorf("%w: %w", driver.ErrNonceUsed, err)
	}
	return err
}

// Find returns the inclusion of the first of t's signings that has a
// receipt, or nil when none is mined. When none has one but t's nonce is
// used anyway, by a transaction that is none of them, it returns
// driver.ErrNonceTaken; the receipts are read again after the nonce so
// that a transaction mined between the two reads is not mistaken for a
// stranger.
func (d *Driver) Find(ctx context.Context, t driver.Tx) (*driver.Inclusion, error) {
	from := common.HexToAddress(t.From)
	hs := hashes(t)
	r, mined, err := d.receipt(ctx, hs)
	if r == nil && err == nil {
		var used bool
		if used, err = d.nonceUsed(ctx, from, t.Nonce); err == nil && used {
			if r, mined, err = d.receipt(ctx, hs); r == nil && err == nil {
				return nil, driver.ErrNonceTaken
			}
		}
	}
	if r == nil || err != nil {
		return nil, err
	}
	return &driver.Inclusion{Hash: mined.Hex(), Block: r.BlockNumber.Int64(), BlockHash: r.BlockHash.Hex(),
		Success: r.Status == types.ReceiptStatusSuccessful, GasUsed: r.GasUsed, Receipt: r}, nil
}

func hashes(t driver.Tx) []common.Hash {
	out := make([]common.Hash, 0, 1+len(t.Prior))
	for _, h := range t.Hashes() {
		out = append(out, common.HexToHash(h))
	}
	return out
}

// receipt returns the receipt of the first of hashes that has one, and
// which hash that is; nil when none is mined.
func (d *Driver) receipt(ctx context.Context, hashes []common.Hash) (*types.Receipt, common.Hash, error) {
	for _, h := range hashes {
		r, err := d.client.TransactionReceipt(ctx, h)
		if errors.Is(err, ethereum.NotFound) {
			continue
		}
		if err != nil {
			return nil, common.Hash{}, fmt.Errorf("getting receipt of %s: %w", h, err)
		}
		return r, h, nil
	}
	return nil, common.Hash{}, nil
}

// nonceUsed reports whether a transaction with nonce from `from` is mined.
func (d *Driver) nonceUsed(ctx context.Context, from common.Address, nonce uint64) (bool, error) {
	n, err := d.client.NonceAt(ctx, from, nil)
	if err != nil {
		return false, fmt.Errorf("getting nonce of %s: %w", from, err)
	}
	return n > nonce, nil
}

// accountUsed reports whether addr has sent a transaction or holds code.
func (d *Driver) accountUsed(ctx context.Context, addr common.Address) (bool, error) {
	n, err := d.client.NonceAt(ctx, addr, nil)
	if err != nil {
		return false, fmt.Errorf("getting nonce of %s: %w", addr, err)
	}
	code, err := d.client.CodeAt(ctx, addr, nil)
	if err != nil {
		return false, fmt.Errorf("getting code of %s: %w", addr, err)
	}
	return n > 0 || len(code) > 0, nil
}

// estimate returns the gas limit for a call: the node's estimate plus 25%,
// since the estimate is taken on the current state and the transaction
// lands on a later one.
func (d *Driver) estimate(ctx context.Context, from common.Address, to *common.Address, data []byte) (uint64, error) {
	gas, err := d.client.EstimateGas(ctx, ethereum.CallMsg{From: from, To: to, Data: data})
	if err != nil {
		return 0, fmt.Errorf("estimating gas: %w", err)
	}
	return gas + gas/4, nil
}

// revertReason replays a reverted transaction on the state before its
// block to get a readable reason; the replay may not revert the same way,
// so it only adds detail to what the receipt says.
func (d *Driver) revertReason(ctx context.Context, tx *types.Transaction, from common.Address, r *types.Receipt) string {
	what := fmt.Sprintf("transaction %s reverted in block %s", r.TxHash.Hex(), r.BlockNumber)
	if tx == nil || r.BlockNumber == nil || r.BlockNumber.Sign() == 0 {
		return what
	}
	parent := new(big.Int).Sub(r.BlockNumber, big.NewInt(1))
	_, err := d.client.CallContract(ctx, ethereum.CallMsg{From: from, To: tx.To(), Data: tx.Data(), Gas: tx.Gas()}, parent)
	if err == nil {
		return what
	}
	// A custom error has no decoded text; its data (selector and
	// arguments) is then all there is to go on.
	var de rpc.DataError
	if errors.As(err, &de) && strings.HasSuffix(err.Error(), "execution reverted") {
		if data, ok := de.ErrorData().(string); ok && data != "" {
			return fmt.Sprintf("%s: %v (data %s)", what, err, data)
		}
	}
	return fmt.Sprintf("%s: %v", what, err)
}

// benignSendError reports whether a broadcast error means the node already
// has the transaction (or a replacement of it), so it is no failure.
func benignSendError(err error) bool {
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"already known", "already imported", "known transaction"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// nonceTooLow reports whether the node refused a transaction because its
// nonce is used; whether by our transaction is for the receipts to say.
func nonceTooLow(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "nonce too low") || strings.Contains(msg, "nonce is too low") || strings.Contains(msg, "already been used")
}

func decodeTx(raw []byte) (*types.Transaction, error) {
	if len(raw) == 0 {
		return nil, errors.New("stored transaction is empty")
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("decoding stored transaction: %w", err)
	}
	return tx, nil
}

// stored is the form the executor stores of a signed transaction.
func stored(from common.Address, tx *types.Transaction) (driver.Tx, error) {
	raw, err := tx.MarshalBinary()
	if err != nil {
		return driver.Tx{}, fmt.Errorf("encoding signed transaction: %w", err)
	}
	return driver.Tx{From: hexAddr(from), Nonce: tx.Nonce(), Hash: tx.Hash().Hex(), Raw: raw}, nil
}
