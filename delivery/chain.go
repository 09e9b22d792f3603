package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/settle-dev/settle/delivery/evm"
)

// ChainClient is what the executor needs from a chain; *ethclient.Client
// satisfies it.
type ChainClient interface {
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

// rpcTimeout bounds node calls made outside a payout's own deadline.
const rpcTimeout = 10 * time.Second

// Finality says when a block is final on a chain: Depth blocks below the
// node's head, or, with Tag, at or below the node's "finalized" block.
type Finality struct {
	Depth uint64
	Tag   bool
}

// defaultFinalityDepth matches the reconciler's default.
const defaultFinalityDepth = 12

// chain is one configured chain.
type chain struct {
	id       uint64
	client   ChainClient
	signer   types.Signer
	finality Finality
	// executor is the chain's SettleExecutor (nil: calls cannot be
	// delivered here), checked by verify; callGas is the gas a merchant
	// call gets.
	executor *common.Address
	callGas  uint64
	// maxFee is the ceiling of a transaction's fee cap (wei per gas): no
	// signing or bump goes above it.
	maxFee *big.Int
	// finalTTL is how long a read of the final block is reused, so a pass
	// over many payouts asks the node once.
	finalTTL time.Duration

	mu       sync.Mutex
	verified bool
	final    uint64
	finalAt  time.Time
}

func newChain(id uint64, c ChainClient, f Finality, finalTTL time.Duration) *chain {
	return &chain{id: id, client: c, signer: types.LatestSignerForChainID(new(big.Int).SetUint64(id)), finality: f, finalTTL: finalTTL,
		callGas: evm.DefaultCallGas}
}

// finalized returns the highest block number that is final now.
func (c *chain) finalized(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if !c.finalAt.IsZero() && time.Since(c.finalAt) < c.finalTTL {
		defer c.mu.Unlock()
		return c.final, nil
	}
	c.mu.Unlock()
	var n *big.Int // the head
	if c.finality.Tag {
		n = big.NewInt(int64(rpc.FinalizedBlockNumber))
	}
	h, err := c.client.HeaderByNumber(ctx, n)
	if err != nil {
		return 0, fmt.Errorf("reading the final block: %w", err)
	}
	final := h.Number.Uint64()
	if !c.finality.Tag {
		final = max(final, c.finality.Depth) - c.finality.Depth
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.final, c.finalAt = final, time.Now()
	return final, nil
}

// blockHash returns the hash of the block at number on the node's current
// chain, or the zero hash when the node has no such block (any more).
func (c *chain) blockHash(ctx context.Context, number uint64) (common.Hash, error) {
	h, err := c.client.HeaderByNumber(ctx, new(big.Int).SetUint64(number))
	if errors.Is(err, ethereum.NotFound) {
		return common.Hash{}, nil
	}
	if err != nil {
		return common.Hash{}, fmt.Errorf("reading block %d: %w", number, err)
	}
	return h.Hash(), nil
}

// verify checks once that the node serves the chain it is configured for
// (payouts signed for one chain id must not be sent to another chain's
// node) and that the configured executor is this build's, owned by the
// treasury.
func (c *chain) verify(ctx context.Context, treasury common.Address) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verified {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	id, err := c.client.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("getting chain id: %w", err)
	}
	if !id.IsUint64() || id.Uint64() != c.id {
		return fmt.Errorf("node serves chain %s, configured as %d", id, c.id)
	}
	if c.executor != nil {
		if err := evm.Verify(ctx, c.client, *c.executor, treasury); err != nil {
			return err
		}
	}
	c.verified = true
	return nil
}

// fees are the EIP-1559 fee fields of a transaction.
type fees struct{ tip, cap *big.Int }

// currentFees returns the suggested tip and a fee cap of twice the latest
// base fee plus the tip, which keeps a transaction valid while the base fee
// rises for several full blocks.
func (c *chain) currentFees(ctx context.Context) (fees, error) {
	tip, err := c.client.SuggestGasTipCap(ctx)
	if err != nil {
		return fees{}, fmt.Errorf("getting gas tip: %w", err)
	}
	head, err := c.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return fees{}, fmt.Errorf("getting latest header: %w", err)
	}
	if head.BaseFee == nil {
		return fees{}, fmt.Errorf("chain %d has no base fee: EIP-1559 transactions are not supported", c.id)
	}
	return c.clamp(fees{tip: tip, cap: new(big.Int).Add(tip, new(big.Int).Lsh(head.BaseFee, 1))}), nil
}

// clamp caps f at the chain's fee ceiling (the tip never above the cap).
func (c *chain) clamp(f fees) fees {
	if c.maxFee == nil || f.cap.Cmp(c.maxFee) <= 0 {
		return f
	}
	out := fees{tip: f.tip, cap: new(big.Int).Set(c.maxFee)}
	if out.tip.Cmp(out.cap) > 0 {
		out.tip = new(big.Int).Set(out.cap)
	}
	return out
}

// replaces reports whether f is enough above old for nodes to take it as
// a replacement: 10% more in both tip and cap (geth's price bump).
func replaces(f, old fees) bool {
	need := func(x *big.Int) *big.Int {
		r := new(big.Int).Mul(x, big.NewInt(110))
		return r.Add(r, big.NewInt(99)).Div(r, big.NewInt(100))
	}
	return f.tip.Cmp(need(old.tip)) >= 0 && f.cap.Cmp(need(old.cap)) >= 0 && f.cap.Cmp(old.cap) > 0
}

// bumpFees raises old by at least 25% in both tip and cap (more than the
// 10% geth and others require to replace a pooled transaction), and to
// at least the current fees.
func bumpFees(old, now fees) fees {
	up := func(x *big.Int) *big.Int {
		// ceil(x * 5/4), and at least x+1 so a zero fee rises too.
		r := new(big.Int).Mul(x, big.NewInt(5))
		r.Add(r, big.NewInt(3)).Div(r, big.NewInt(4))
		if r.Cmp(x) <= 0 {
			r.Add(x, big.NewInt(1))
		}
		return r
	}
	tip := bigMax(up(old.tip), now.tip)
	feeCap := bigMax(up(old.cap), now.cap)
	// The cap must cover the tip, and be high enough for the current base
	// fee at the new tip.
	if floor := new(big.Int).Add(new(big.Int).Sub(now.cap, now.tip), tip); feeCap.Cmp(floor) < 0 {
		feeCap = floor
	}
	return fees{tip: tip, cap: feeCap}
}

func bigMax(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return new(big.Int).Set(b)
}

// estimate returns the gas limit for a call from the treasury: the node's
// estimate plus 25%, since the estimate is taken on the current state and
// the transaction lands on a later one.
func (c *chain) estimate(ctx context.Context, from, to common.Address, data []byte) (uint64, error) {
	gas, err := c.client.EstimateGas(ctx, ethereum.CallMsg{From: from, To: &to, Data: data})
	if err != nil {
		return 0, fmt.Errorf("estimating gas: %w", err)
	}
	return gas + gas/4, nil
}

// tokenBalance reads an ERC-20 balance at the latest block.
func (c *chain) tokenBalance(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	out, err := c.client.CallContract(ctx, ethereum.CallMsg{To: &token, Data: balanceOfData(owner)}, nil)
	if err != nil {
		return nil, fmt.Errorf("calling balanceOf(%s) on %s: %w", owner, token, err)
	}
	if len(out) != 32 {
		return nil, fmt.Errorf("balanceOf(%s) on %s returned %d bytes, want 32", owner, token, len(out))
	}
	return new(big.Int).SetBytes(out), nil
}

// receipt returns the receipt of the first of hashes that has one, and
// which hash that is; nil when none is mined.
func (c *chain) receipt(ctx context.Context, hashes []common.Hash) (*types.Receipt, common.Hash, error) {
	for _, h := range hashes {
		r, err := c.client.TransactionReceipt(ctx, h)
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

// accountUsed reports whether addr has sent a transaction or holds code.
func (c *chain) accountUsed(ctx context.Context, addr common.Address) (bool, error) {
	n, err := c.client.NonceAt(ctx, addr, nil)
	if err != nil {
		return false, fmt.Errorf("getting nonce of %s: %w", addr, err)
	}
	code, err := c.client.CodeAt(ctx, addr, nil)
	if err != nil {
		return false, fmt.Errorf("getting code of %s: %w", addr, err)
	}
	return n > 0 || len(code) > 0, nil
}

// nonceUsed reports whether a transaction with nonce from `from` is mined.
func (c *chain) nonceUsed(ctx context.Context, from common.Address, nonce uint64) (bool, error) {
	n, err := c.client.NonceAt(ctx, from, nil)
	if err != nil {
		return false, fmt.Errorf("getting nonce of %s: %w", from, err)
	}
	return n > nonce, nil
}

// lookup finds the mined one of hashes. When none has a receipt it also
// reports whether their nonce was used anyway, by a transaction that is
// none of them; the receipts are read again after the nonce so that a
// transaction mined between the two reads is not mistaken for a stranger.
func (c *chain) lookup(ctx context.Context, from common.Address, nonce uint64, hashes []common.Hash) (r *types.Receipt, mined common.Hash, stolen bool, err error) {
	if r, mined, err = c.receipt(ctx, hashes); r != nil || err != nil {
		return r, mined, false, err
	}
	used, err := c.nonceUsed(ctx, from, nonce)
	if err != nil || !used {
		return nil, common.Hash{}, false, err
	}
	if r, mined, err = c.receipt(ctx, hashes); r != nil || err != nil {
		return r, mined, false, err
	}
	return nil, common.Hash{}, true, nil
}

// revertReason replays a reverted transaction on the state before its
// block to get a readable reason; the replay may not revert the same way,
// so it only adds detail to what the receipt says.
func (c *chain) revertReason(ctx context.Context, tx *types.Transaction, from common.Address, r *types.Receipt) string {
	what := fmt.Sprintf("transaction %s reverted in block %s", r.TxHash.Hex(), r.BlockNumber)
	if tx == nil || r.BlockNumber == nil || r.BlockNumber.Sign() == 0 {
		return what
	}
	parent := new(big.Int).Sub(r.BlockNumber, big.NewInt(1))
	_, err := c.client.CallContract(ctx, ethereum.CallMsg{From: from, To: tx.To(), Data: tx.Data(), Gas: tx.Gas()}, parent)
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
