package main

import (
	"context"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/settle-dev/settle/api"
)

// codeChecker is the API's api.CodeChecker: it asks each EVM chain's node
// (rpc_url) for an address's code. Chains without an rpc_url are not
// checked.
type codeChecker struct {
	clients map[uint64]*ethclient.Client
}

// newCodeChecker dials one client per EVM chain with an rpc_url. Dialing
// HTTP connects lazily, so a node that is down at start-up fails the
// creates that need it, not the API's start.
func newCodeChecker(ctx context.Context, chains []chainConfig) (*codeChecker, error) {
	c := &codeChecker{clients: map[uint64]*ethclient.Client{}}
	for _, cc := range chains {
		if cc.Family != "evm" || cc.RPCURL == "" {
			continue
		}
		cl, err := ethclient.DialContext(ctx, cc.RPCURL)
		if err != nil {
			return nil, fmt.Errorf("chain %s: dialing rpc_url for the contract-code check: %w", cc.Name, err)
		}
		c.clients[cc.ID] = cl
	}
	return c, nil
}

// HasCode implements api.CodeChecker at the latest block.
func (c *codeChecker) HasCode(ctx context.Context, chainID uint64, address string) (bool, error) {
	cl, ok := c.clients[chainID]
	if !ok {
		return false, fmt.Errorf("chain %d has no rpc_url: %w", chainID, api.ErrCodeUnchecked)
	}
	code, err := cl.CodeAt(ctx, common.HexToAddress(address), nil)
	if err != nil {
		return false, fmt.Errorf("reading the code of %s on chain %d: %w", address, chainID, err)
	}
	return len(code) > 0, nil
}
