package anvil

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"
)

// The shape of the peer benchmark's history; changing any of these changes
// the expected log count and checksum.
const (
	benchSeedBase = 0x1000000
	benchSeedStep = 1000
	benchTxGas    = 3_000_000
	// benchSkipEvery: every fifth block (k%5 == 4) stays empty, so the
	// history has gaps like a real chain.
	benchSkipEvery = 5
	// benchVerifyBatch bounds how many eth_getLogs calls go in one batch
	// request when verifying.
	benchVerifyBatch = 100
)

// BenchSupply is the BenchToken supply BuildBenchHistory deploys, 10^27.
// Its constructor Transfer is part of the history, so a checksum over all
// Transfer values subtracts it.
var BenchSupply = new(big.Int).Exp(big.NewInt(10), big.NewInt(27), nil)

// TransferTopic is topic 0 of Transfer(address,address,uint256), shared by
// ERC-20 and ERC-721 transfers (which differ in how many topics follow).
var TransferTopic = crypto.Keccak256Hash([]byte("Transfer(address,address,uint256)"))

// BuildBenchHistory builds the deterministic Transfer history the indexer
// benchmarks use: account 0 deploys BenchToken(BenchSupply) in its own
// block, then for k in 0..blocks-1 one block is mined holding
// spray(0x1000000 + k*1000, perTx) (gas 3,000,000) unless k%5 == 4, in
// which case it is empty.
//
// On a fresh node that gives head block blocks+1, the token at
// 0x5FbDB2315678afecb367f032d93F642f64180aa3 and logs = 1 +
// perTx*(sprayed blocks) Transfer logs; (500, 750) gives 300,001 logs whose
// values sum to BenchSupply + 112,650,000.
//
// It needs a node without interval mining; automine is switched off while
// it runs and restored after. Transactions are submitted without waiting
// and checked once at the end, which keeps 500 blocks to a few seconds.
func (n *Node) BuildBenchHistory(ctx context.Context, blocks, perTx int) (token common.Address, logs int, err error) {
	if blocks < 0 || perTx <= 0 {
		return common.Address{}, 0, fmt.Errorf("bench history: need blocks >= 0 and perTx > 0, got %d and %d", blocks, perTx)
	}
	if n.blockTime > 0 {
		return common.Address{}, 0, errors.New("bench history: node mines on an interval; start it with NoMining so every block is ours")
	}
	auto, err := n.Automine(ctx)
	if err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
	}
	if auto {
		if err := n.SetAutomine(ctx, false); err != nil {
			return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
		}
		defer func() {
			// A fresh context: restore even if ctx was cancelled.
			if rerr := n.SetAutomine(context.WithoutCancel(ctx), true); rerr != nil && err == nil {
				err = fmt.Errorf("bench history: %w", rerr)
			}
		}()
	}

	key := DevKeys[0]
	from := crypto.PubkeyToAddress(key.PublicKey)
	deploy, err := deployData(benchTokenName, BenchSupply)
	if err != nil {
		return common.Address{}, 0, err
	}
	hash, err := n.SendTx(ctx, key, nil, deploy)
	if err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: deploying: %w", err)
	}
	if err := n.evmMine(ctx); err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
	}
	r, err := n.WaitReceipt(ctx, hash)
	if err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: deploying: %w", err)
	}
	if r.Status != 1 || len(r.Logs) != 1 {
		return common.Address{}, 0, fmt.Errorf("bench history: deploy %s failed (status %d, %d logs)", hash, r.Status, len(r.Logs))
	}
	token = r.ContractAddress
	deployBlock := r.BlockNumber.Uint64()

	// Check once that a spray of this size fits the fixed gas limit, so no
	// later transaction can run out of gas.
	if blocks > 0 {
		data, err := packSpray(benchSeed(blocks-1), perTx)
		if err != nil {
			return common.Address{}, 0, err
		}
		est, err := n.client.EstimateGas(ctx, ethereum.CallMsg{From: from, To: &token, Data: data})
		if err != nil {
			return common.Address{}, 0, fmt.Errorf("bench history: estimating spray: %w", err)
		}
		if est > benchTxGas {
			return common.Address{}, 0, fmt.Errorf("bench history: spray of %d events needs %d gas, over the fixed %d", perTx, est, benchTxGas)
		}
	}

	// Held for the whole run: the loop tracks account 0's nonce itself.
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	nonce, err := n.client.PendingNonceAt(ctx, from)
	if err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: getting nonce: %w", err)
	}
	tip, feeCap, err := n.fees(ctx)
	if err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
	}
	// Base fees only fall on these under-target blocks, so one fee cap
	// holds for the whole run.
	var sprayed []uint64 // block index k of each spray
	for k := range blocks {
		if k%benchSkipEvery != benchSkipEvery-1 {
			data, err := packSpray(benchSeed(k), perTx)
			if err != nil {
				return common.Address{}, 0, err
			}
			tx, err := n.signTx(key, nonce, &token, data, benchTxGas, tip, feeCap)
			if err != nil {
				return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
			}
			raw, err := tx.MarshalBinary()
			if err != nil {
				return common.Address{}, 0, fmt.Errorf("bench history: encoding tx: %w", err)
			}
			if err := n.rpc.CallContext(ctx, nil, "eth_sendRawTransaction", hexutil.Bytes(raw)); err != nil {
				return common.Address{}, 0, fmt.Errorf("bench history: sending spray for block %d: %w", k, err)
			}
			nonce++
			sprayed = append(sprayed, uint64(k))
		}
		if err := n.evmMine(ctx); err != nil {
			return common.Address{}, 0, fmt.Errorf("bench history: block %d: %w", k, err)
		}
	}

	if err := n.verifySprays(ctx, token, deployBlock, sprayed, perTx); err != nil {
		return common.Address{}, 0, fmt.Errorf("bench history: %w", err)
	}
	return token, 1 + len(sprayed)*perTx, nil
}

func benchSeed(k int) *big.Int {
	return big.NewInt(benchSeedBase + int64(k)*benchSeedStep)
}

func packSpray(seed *big.Int, perTx int) ([]byte, error) {
	return pack(benchTokenName, "spray", seed, big.NewInt(int64(perTx)))
}

// evmMine mines one block holding whatever is in the pool.
func (n *Node) evmMine(ctx context.Context) error {
	if err := n.rpc.CallContext(ctx, nil, "evm_mine"); err != nil {
		return fmt.Errorf("mining: %w", err)
	}
	return nil
}

// verifySprays checks that every spray ran to completion. A spray that
// failed (out of gas is the only way) reverts all its logs, so it suffices
// that each sprayed block holds that spray's last Transfer: one cheap,
// batched eth_getLogs per block instead of hundreds of megabytes of
// receipts.
func (n *Node) verifySprays(ctx context.Context, token common.Address, deployBlock uint64, sprayed []uint64, perTx int) error {
	for start := 0; start < len(sprayed); start += benchVerifyBatch {
		end := min(start+benchVerifyBatch, len(sprayed))
		batch := make([]rpc.BatchElem, 0, end-start)
		results := make([][]map[string]any, end-start)
		for i, k := range sprayed[start:end] {
			block := hexutil.Uint64(deployBlock + 1 + k)
			last := new(big.Int).Add(benchSeed(int(k)), big.NewInt(int64(perTx-1)))
			filter := map[string]any{
				"fromBlock": block,
				"toBlock":   block,
				"address":   token,
				"topics": []any{
					TransferTopic,
					common.BytesToHash(token.Bytes()),
					common.BigToHash(last),
				},
			}
			batch = append(batch, rpc.BatchElem{Method: "eth_getLogs", Args: []any{filter}, Result: &results[i]})
		}
		if err := n.rpc.BatchCallContext(ctx, batch); err != nil {
			return fmt.Errorf("verifying sprays: %w", err)
		}
		for i, el := range batch {
			k := sprayed[start+i]
			if el.Error != nil {
				return fmt.Errorf("verifying spray in block %d: %w", deployBlock+1+k, el.Error)
			}
			if len(results[i]) != 1 {
				return fmt.Errorf("spray in block %d did not complete: %d final Transfer logs, want 1", deployBlock+1+k, len(results[i]))
			}
		}
	}
	return nil
}
