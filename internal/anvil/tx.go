package anvil

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// receiptPoll is how often WaitReceipt asks for a receipt. Automine answers
// at once; this only matters with interval or manual mining.
const receiptPoll = 10 * time.Millisecond

// SendTx signs a dynamic-fee transaction from key to `to` (nil deploys data
// as init code) and submits it without waiting for it to be mined, so bulk
// loads can queue many transactions between blocks. The nonce is the
// account's pending nonce and the gas limit anvil's estimate plus headroom;
// a call that reverts fails in estimation and is never sent (use SendTxGas
// to mine it anyway).
func (n *Node) SendTx(ctx context.Context, key *ecdsa.PrivateKey, to *common.Address, data []byte) (common.Hash, error) {
	return n.SendTxGas(ctx, key, to, data, 0)
}

// SendTxGas is SendTx with an explicit gas limit, which skips estimation:
// a transaction that reverts is still submitted and mined with receipt
// status 0, so tests can watch a failed call land on chain. Gas 0 means
// estimate, as SendTx does.
func (n *Node) SendTxGas(ctx context.Context, key *ecdsa.PrivateKey, to *common.Address, data []byte, gas uint64) (common.Hash, error) {
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	from := crypto.PubkeyToAddress(key.PublicKey)
	nonce, err := n.client.PendingNonceAt(ctx, from)
	if err != nil {
		return common.Hash{}, fmt.Errorf("getting nonce of %s: %w", from, err)
	}
	if gas == 0 {
		if gas, err = n.client.EstimateGas(ctx, ethereum.CallMsg{From: from, To: to, Data: data}); err != nil {
			return common.Hash{}, fmt.Errorf("estimating gas: %w", err)
		}
		// Estimates are taken against current state; leave room for the
		// state the transaction actually lands on (e.g. other queued
		// transactions).
		gas += gas / 5
	}
	tip, feeCap, err := n.fees(ctx)
	if err != nil {
		return common.Hash{}, err
	}
	tx, err := n.signTx(key, nonce, to, data, gas, tip, feeCap)
	if err != nil {
		return common.Hash{}, err
	}
	if err := n.client.SendTransaction(ctx, tx); err != nil {
		return common.Hash{}, fmt.Errorf("sending transaction: %w", err)
	}
	return tx.Hash(), nil
}

// fees returns a tip and a fee cap of twice the latest base fee plus the
// tip, which keeps a transaction valid while the base fee rises for a few
// blocks.
func (n *Node) fees(ctx context.Context) (tip, feeCap *big.Int, err error) {
	tip, err = n.client.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("getting gas tip: %w", err)
	}
	head, err := n.client.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("getting latest header: %w", err)
	}
	feeCap = new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2)))
	return tip, feeCap, nil
}

func (n *Node) signTx(key *ecdsa.PrivateKey, nonce uint64, to *common.Address, data []byte, gas uint64, tip, feeCap *big.Int) (*types.Transaction, error) {
	tx, err := types.SignNewTx(key, n.signer, &types.DynamicFeeTx{
		ChainID:   new(big.Int).SetUint64(n.chainID),
		Nonce:     nonce,
		GasTipCap: tip,
		GasFeeCap: feeCap,
		Gas:       gas,
		To:        to,
		Data:      data,
	})
	if err != nil {
		return nil, fmt.Errorf("signing transaction: %w", err)
	}
	return tx, nil
}

// WaitReceipt polls until the transaction is mined or ctx ends. On a node
// without automine something else has to mine it (Mine, interval mining).
func (n *Node) WaitReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	tick := time.NewTicker(receiptPoll)
	defer tick.Stop()
	for {
		r, err := n.client.TransactionReceipt(ctx, hash)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ethereum.NotFound) {
			return nil, fmt.Errorf("getting receipt of %s: %w", hash, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for receipt of %s: %w", hash, ctx.Err())
		case <-tick.C:
		}
	}
}

// transact sends a transaction, waits for it, and turns a revert into an
// error (the receipt is still returned for inspection).
func (n *Node) transact(ctx context.Context, key *ecdsa.PrivateKey, to *common.Address, data []byte) (*types.Receipt, error) {
	hash, err := n.SendTx(ctx, key, to, data)
	if err != nil {
		return nil, err
	}
	r, err := n.WaitReceipt(ctx, hash)
	if err != nil {
		return nil, err
	}
	if r.Status != types.ReceiptStatusSuccessful {
		return r, fmt.Errorf("transaction %s reverted in block %d", hash, r.BlockNumber)
	}
	return r, nil
}
