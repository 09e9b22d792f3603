package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/anvil"
)

// devPayer is the dev account that `make dev` funds with test tokens.
const devPayer = 1

// devOnramp is the anvil account the sandbox onramp pays from.
const devOnramp = 4

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
	for i := range cfg.Chains {
		cc := &cfg.Chains[i]
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
		statePath := filepath.Join(dir, fmt.Sprintf("anvil-%d.json", cc.ID))
		if err := checkDevState(statePath); err != nil {
			closeAll()
			return nil, fmt.Errorf("dev chain %s: %w", cc.Name, err)
		}
		startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := anvil.Start(startCtx, anvil.Config{
			Host: u.Hostname(), Port: port, ChainID: cc.ID, BlockTime: time.Second,
			StatePath: statePath, Logger: logger,
		})
		cancel()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("starting dev chain %s: %w", cc.Name, err)
		}
		nodes = append(nodes, n)
		if err := deployDevTokens(ctx, n, *cc, treasury, logger); err != nil {
			closeAll()
			return nil, fmt.Errorf("dev chain %s: %w", cc.Name, err)
		}
		if cc.ExecutorAddress == "" {
			addr, err := deployDevExecutor(ctx, n, treasury, logger)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("dev chain %s: %w", cc.Name, err)
			}
			cc.ExecutorAddress = addr.Hex()
		}
	}
	return nodes, nil
}

// checkDevState refuses a dev chain's state file that anvil cannot load:
// anvil rewrites it in place every second, so a kill or power cut during a
// write leaves it empty or cut short, and anvil then fails with a JSON
// parse error that does not say what to do. The chain cannot be resumed
// from it, and starting that one chain afresh would leave the dev
// databases pointing at blocks that no longer exist.
func checkDevState(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a fresh chain
	}
	if err != nil {
		return fmt.Errorf("opening the chain's state: %w", err)
	}
	defer f.Close()
	var v json.RawMessage
	if err := json.NewDecoder(f).Decode(&v); err != nil {
		return fmt.Errorf("its state file %s is damaged (%v), most likely because anvil was killed while writing it; "+
			"the chain cannot be resumed: run `make dev-clean`, then `make dev`, to start the dev chains and databases afresh", path, err)
	}
	return nil
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
		// Keep the dev payer and the sandbox onramp able to send deposits
		// and the treasury able to deliver: top them up to a million
		// tokens when low.
		unit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(t.Decimals)), nil)
		million := new(big.Int).Mul(big.NewInt(1_000_000), unit)
		for _, to := range []common.Address{anvil.DevAddress(devPayer), treasury, anvil.DevAddress(devOnramp)} {
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

// devExecutorDeployer deploys the dev chains' SettleExecutor at its nonce
// 0, so the executor has the same address on every dev chain and across
// restarts; no other dev tool uses this account.
const devExecutorDeployer = 9

// deployDevExecutor returns the dev chain's SettleExecutor for treasury,
// deploying it on a fresh chain.
func deployDevExecutor(ctx context.Context, n *anvil.Node, treasury common.Address, logger *slog.Logger) (common.Address, error) {
	from := anvil.DevAddress(devExecutorDeployer)
	want := crypto.CreateAddress(from, 0)
	code, err := n.Client().CodeAt(ctx, want, nil)
	if err != nil {
		return common.Address{}, fmt.Errorf("checking the executor: %w", err)
	}
	if len(code) == 0 {
		got, err := n.DeployCode(ctx, anvil.DevKeys[devExecutorDeployer], evm.DeployData(treasury))
		if err != nil {
			return common.Address{}, fmt.Errorf("deploying the executor: %w", err)
		}
		if got != want {
			return common.Address{}, fmt.Errorf("executor deployed at %s, want %s (run `make dev-clean` to start the chains afresh)", got.Hex(), want.Hex())
		}
		logger.Info("deployed dev executor", "chain_id", n.ChainID(), "address", got.Hex())
	}
	if err := evm.Verify(ctx, n.Client(), want, treasury); err != nil {
		return common.Address{}, fmt.Errorf("%w (run `make dev-clean` after changing contracts/SettleExecutor.sol)", err)
	}
	return want, nil
}
