package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/internal/anvil"
)

// devPayer is the dev account that `make dev` funds with test tokens.
const devPayer = 1

// startDevChains starts an anvil for every EVM chain of the config whose
// rpc_url is on loopback, keeping its state in dir so the chain (and with it
// the indexer's cursor) survives restarts, and deploys the configured test
// tokens on a fresh chain. The caller closes the returned nodes.
func startDevChains(ctx context.Context, cfg *fileConfig, dir string, treasury common.Address, logger *slog.Logger) ([]*anvil.Node, error) {
	var nodes []*anvil.Node
	closeAll := func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}
	for _, cc := range cfg.Chains {
		if cc.Family != "evm" || cc.RPCURL == "" {
			continue
		}
		u, err := url.Parse(cc.RPCURL)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("chain %s rpc_url: %w", cc.Name, err)
		}
		ip := net.ParseIP(u.Hostname())
		if ip == nil || !ip.IsLoopback() {
			continue // a real node; nothing to start
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("chain %s rpc_url %s needs an explicit port", cc.Name, cc.RPCURL)
		}
		startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := anvil.Start(startCtx, anvil.Config{
			Host: u.Hostname(), Port: port, ChainID: cc.ID, BlockTime: time.Second,
			StatePath: filepath.Join(dir, fmt.Sprintf("anvil-%d.json", cc.ID)), Logger: logger,
		})
		cancel()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("starting dev chain %s: %w", cc.Name, err)
		}
		nodes = append(nodes, n)
		if err := deployDevTokens(ctx, n, cc, treasury, logger); err != nil {
			closeAll()
			return nil, fmt.Errorf("dev chain %s: %w", cc.Name, err)
		}
	}
	return nodes, nil
}

// deployDevTokens deploys each configured token that has no code yet. The
// dev config lists the addresses anvil's account 0 deploys to (its nonces
// 0, 1, …), so a fresh chain gets the tokens where the config expects them.
func deployDevTokens(ctx context.Context, n *anvil.Node, cc chainConfig, treasury common.Address, logger *slog.Logger) error {
	// The treasury pays gas for deliveries and refunds.
	if bal, err := n.Client().BalanceAt(ctx, treasury, nil); err == nil && bal.Sign() == 0 {
		if err := n.SetBalance(ctx, treasury, new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))); err != nil {
			return fmt.Errorf("funding the treasury with gas: %w", err)
		}
	}
	for _, t := range cc.Tokens {
		want := common.HexToAddress(t.Address)
		code, err := n.Client().CodeAt(ctx, want, nil)
		if err != nil {
			return fmt.Errorf("checking token %s: %w", t.Symbol, err)
		}
		if len(code) == 0 {
			got, err := n.DeployTestToken(ctx, anvil.DevKeys[0], "Test "+t.Symbol, t.Symbol, t.Decimals)
			if err != nil {
				return fmt.Errorf("deploying test %s: %w", t.Symbol, err)
			}
			if got != want {
				return fmt.Errorf("test %s deployed at %s, but the config expects %s (run `make dev-clean` to start the chains afresh)",
					t.Symbol, got.Hex(), t.Address)
			}
			logger.Info("deployed dev token", "chain", cc.Name, "symbol", t.Symbol, "address", strings.ToLower(got.Hex()))
		}
		// Keep the dev payer able to send deposits and the treasury able
		// to deliver: top both up to a million tokens when low.
		unit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(t.Decimals)), nil)
		million := new(big.Int).Mul(big.NewInt(1_000_000), unit)
		for _, to := range []common.Address{anvil.DevAddress(devPayer), treasury} {
			bal, err := n.BalanceOf(ctx, want, to)
			if err != nil {
				return fmt.Errorf("reading %s balance: %w", t.Symbol, err)
			}
			if bal.Cmp(new(big.Int).Div(million, big.NewInt(10))) >= 0 {
				continue
			}
			if _, err := n.Mint(ctx, anvil.DevKeys[0], want, to, million); err != nil {
				return fmt.Errorf("funding %s: %w", to.Hex(), err)
			}
		}
	}
	return nil
}
