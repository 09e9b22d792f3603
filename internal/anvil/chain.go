package anvil

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// Mine mines blocks blocks at once (anvil_mine), including whatever is in
// the pool in the first of them.
func (n *Node) Mine(ctx context.Context, blocks int) error {
	if blocks < 0 {
		return fmt.Errorf("mining %d blocks: negative count", blocks)
	}
	if blocks == 0 {
		return nil
	}
	if err := n.rpc.CallContext(ctx, nil, "anvil_mine", hexutil.Uint64(blocks)); err != nil {
		return fmt.Errorf("mining %d blocks: %w", blocks, err)
	}
	return nil
}

// SetBalance sets addr's ether balance to wei (anvil_setBalance), e.g. to
// give a treasury address gas money without a funding transaction. It
// changes state directly: no transaction or block records it.
func (n *Node) SetBalance(ctx context.Context, addr common.Address, wei *big.Int) error {
	if wei == nil || wei.Sign() < 0 {
		return fmt.Errorf("setting balance of %s: need a non-negative amount, got %v", addr, wei)
	}
	if err := n.rpc.CallContext(ctx, nil, "anvil_setBalance", addr, (*hexutil.Big)(wei)); err != nil {
		return fmt.Errorf("setting balance of %s: %w", addr, err)
	}
	return nil
}

// SetAutomine turns mining of one block per transaction on or off
// (evm_setAutomine). Off with no block time is the same as NoMining.
func (n *Node) SetAutomine(ctx context.Context, on bool) error {
	if err := n.rpc.CallContext(ctx, nil, "evm_setAutomine", on); err != nil {
		return fmt.Errorf("setting automine %t: %w", on, err)
	}
	return nil
}

// SetIntervalMining sets the interval between mined blocks
// (evm_setIntervalMining, whole seconds); 0 stops interval mining, so
// blocks appear only through Mine or automine.
func (n *Node) SetIntervalMining(ctx context.Context, every time.Duration) error {
	if err := n.rpc.CallContext(ctx, nil, "evm_setIntervalMining", uint64(every/time.Second)); err != nil {
		return fmt.Errorf("setting interval mining to %s: %w", every, err)
	}
	return nil
}

// Automine reports whether the node mines one block per transaction.
func (n *Node) Automine(ctx context.Context) (bool, error) {
	var on bool
	if err := n.rpc.CallContext(ctx, &on, "anvil_getAutomine"); err != nil {
		return false, fmt.Errorf("getting automine: %w", err)
	}
	return on, nil
}

// Snapshot records the chain state (evm_snapshot) and returns an id for
// Revert.
func (n *Node) Snapshot(ctx context.Context) (string, error) {
	var id string
	if err := n.rpc.CallContext(ctx, &id, "evm_snapshot"); err != nil {
		return "", fmt.Errorf("taking snapshot: %w", err)
	}
	return id, nil
}

// Revert restores the state recorded by Snapshot (evm_revert). Anvil drops
// the snapshot, and every later one, when reverting to it.
func (n *Node) Revert(ctx context.Context, id string) error {
	var ok bool
	if err := n.rpc.CallContext(ctx, &ok, "evm_revert", id); err != nil {
		return fmt.Errorf("reverting to snapshot %s: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("reverting to snapshot %s: no such snapshot", id)
	}
	return nil
}

// Reorg replaces the newest depth blocks with depth new, empty blocks at the
// same heights (anvil_reorg). Transactions in the dropped blocks are gone,
// not returned to the pool.
func (n *Node) Reorg(ctx context.Context, depth int) error {
	return n.reorg(ctx, depth, []any{})
}

// ReorgTx is a transaction to include in the blocks that ReorgWith builds.
type ReorgTx struct {
	// Key signs the transaction.
	Key *ecdsa.PrivateKey
	// To is the recipient; nil deploys Data as init code.
	To *common.Address
	// Data is the call data.
	Data []byte
	// Gas is the gas limit; 0 estimates against the fork point, which fails
	// for a transaction that depends on an earlier one in the same reorg.
	Gas uint64
	// Block is the index among the new blocks: 0 is the first block above
	// the fork point, depth-1 the new head.
	Block uint64
}

// ReorgWith is Reorg with txs placed into the new blocks, e.g. to move a
// deposit to another block or replace it with a different one. Nonces are
// assigned from each sender's nonce at the fork point in (Block, slice)
// order. It returns the hashes of txs in slice order.
func (n *Node) ReorgWith(ctx context.Context, depth int, txs []ReorgTx) ([]common.Hash, error) {
	if depth <= 0 {
		return nil, fmt.Errorf("reorg depth %d: must be positive", depth)
	}
	head, err := n.client.BlockNumber(ctx)
	if err != nil {
		return nil, fmt.Errorf("reorg: getting head: %w", err)
	}
	if uint64(depth) > head {
		return nil, fmt.Errorf("reorg depth %d: chain has only %d blocks", depth, head)
	}
	forkPoint := new(big.Int).SetUint64(head - uint64(depth))
	tip, feeCap, err := n.fees(ctx)
	if err != nil {
		return nil, err
	}

	order := make([]int, len(txs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(txs[a].Block, txs[b].Block) })

	nonces := make(map[common.Address]uint64)
	pairs := make([]any, len(txs))
	hashes := make([]common.Hash, len(txs))
	for _, i := range order {
		t := txs[i]
		if t.Block >= uint64(depth) {
			return nil, fmt.Errorf("reorg tx %d: block index %d outside the %d new blocks", i, t.Block, depth)
		}
		from := crypto.PubkeyToAddress(t.Key.PublicKey)
		nonce, seen := nonces[from]
		if !seen {
			if nonce, err = n.client.NonceAt(ctx, from, forkPoint); err != nil {
				return nil, fmt.Errorf("reorg tx %d: getting nonce of %s: %w", i, from, err)
			}
		}
		nonces[from] = nonce + 1
		gas := t.Gas
		if gas == 0 {
			msg := ethereum.CallMsg{From: from, To: t.To, Data: t.Data}
			if gas, err = n.client.EstimateGasAtBlock(ctx, msg, forkPoint); err != nil {
				return nil, fmt.Errorf("reorg tx %d: estimating gas at block %d: %w", i, forkPoint, err)
			}
			gas += gas / 5
		}
		tx, err := n.signTx(t.Key, nonce, t.To, t.Data, gas, tip, feeCap)
		if err != nil {
			return nil, fmt.Errorf("reorg tx %d: %w", i, err)
		}
		raw, err := tx.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("reorg tx %d: encoding: %w", i, err)
		}
		pairs[i] = []any{hexutil.Bytes(raw), t.Block}
		hashes[i] = tx.Hash()
	}
	if err := n.reorg(ctx, depth, pairs); err != nil {
		return nil, err
	}
	return hashes, nil
}

// reorg calls anvil_reorg with positional parameters: anvil rejects the
// {depth, txBlockPairs} object form with "invalid type: map, expected u64".
func (n *Node) reorg(ctx context.Context, depth int, pairs []any) error {
	if depth <= 0 {
		return errors.New("reorg depth must be positive")
	}
	if err := n.rpc.CallContext(ctx, nil, "anvil_reorg", uint64(depth), pairs); err != nil {
		return fmt.Errorf("reorg of depth %d: %w", depth, err)
	}
	return nil
}
