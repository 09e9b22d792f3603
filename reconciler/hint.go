package reconciler

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/settle-dev/settle/internal/chain"
)

// TxReader reads one transaction's receipt and block from a chain;
// *ethclient.Client satisfies it.
type TxReader interface {
	TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error)
	HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error)
}

var transferTopic = common.HexToHash("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")

// AttributeTx looks a transaction up directly on every configured EVM chain
// and applies its transfers into the session's receivers at once, ahead of
// the indexer: the payer's "I have paid" (PUT /check with a txHash) moves the
// session to processing without waiting for the indexer to reach the block.
// The deposit is recorded under the same natural key the indexed transfer
// will have, so it is applied once; it becomes final, or is un-applied by a
// reorg, through the same checks as any other deposit. It reports whether
// anything was applied.
func (r *Reconciler) AttributeTx(ctx context.Context, clients map[uint64]TxReader, sessionID, txHash string) (bool, error) {
	rows, err := r.cfg.Postgres.Query(ctx, `SELECT address, id FROM receivers WHERE session_id = $1 AND family = 'evm'`, sessionID)
	if err != nil {
		return false, fmt.Errorf("reading receivers of %s: %w", sessionID, err)
	}
	ours := map[common.Address]Receiver{}
	for rows.Next() {
		var a string
		rc := Receiver{SessionID: sessionID}
		if err := rows.Scan(&a, &rc.ID); err != nil {
			rows.Close()
			return false, err
		}
		ours[common.HexToAddress(a)] = rc
	}
	rows.Close()
	if len(ours) == 0 {
		return false, nil
	}
	hash := common.HexToHash(txHash)
	applied := false
	for _, c := range r.cfg.Chains.ByFamily(chain.FamilyEVM) {
		client, ok := clients[c.ID]
		if !ok {
			continue
		}
		receipt, err := client.TransactionReceipt(ctx, hash)
		if err != nil || receipt == nil || receipt.Status != types.ReceiptStatusSuccessful {
			continue // not on this chain (or failed: a failed tx moved nothing)
		}
		header, err := client.HeaderByHash(ctx, receipt.BlockHash)
		if err != nil {
			return applied, fmt.Errorf("reading block %s on %s: %w", receipt.BlockHash, c.Name, err)
		}
		for _, l := range receipt.Logs {
			if len(l.Topics) != 3 || l.Topics[0] != transferTopic || len(l.Data) != 32 {
				continue
			}
			to := common.BytesToAddress(l.Topics[2].Bytes())
			rc, ok := ours[to]
			if !ok {
				continue
			}
			t := &Transfer{
				ChainID: c.ID, BlockNumber: receipt.BlockNumber.Uint64(), BlockHash: strings.ToLower(receipt.BlockHash.Hex()),
				BlockTime: time.Unix(int64(header.Time), 0), TxHash: strings.ToLower(hash.Hex()), LogIndex: uint32(l.Index),
				Token: strings.ToLower(l.Address.Hex()), From: strings.ToLower(common.BytesToAddress(l.Topics[1].Bytes()).Hex()),
				To: strings.ToLower(to.Hex()), Amount: new(big.Int).SetBytes(l.Data),
			}
			if err := r.ApplyDeposit(ctx, c, t, rc); err != nil {
				return applied, err
			}
			applied = true
		}
	}
	return applied, nil
}

// HeaderReader reads a header by number; *ethclient.Client satisfies it.
type HeaderReader interface {
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
}

// FinalizedTag returns a ChainOptions.Finalized that asks the node for its
// "finalized" block.
func FinalizedTag(c HeaderReader) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		h, err := c.HeaderByNumber(ctx, big.NewInt(int64(rpc.FinalizedBlockNumber)))
		if err != nil {
			return 0, err
		}
		return h.Number.Uint64(), nil
	}
}
