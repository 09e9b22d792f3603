package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/chain"
)

// cmdDevPay sends a payer's deposit for a session on a dev chain and
// follows the session until it ends: the quickest way to watch the whole
// pipeline work.
func cmdDevPay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var chainFlag, tokenFlag *string
	fs := flag.NewFlagSet("dev pay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("SETTLE_CONFIG"), "config file (YAML)")
	chainFlag = fs.String("chain", "", "chain name or id to pay on (default: the first dev chain)")
	tokenFlag = fs.String("token", "", "token address to pay with (default: the chain's first token)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("usage: settle dev pay [-chain NAME] [-token ADDRESS] SESSION_ID AMOUNT")
	}
	id, amountStr := fs.Arg(0), fs.Arg(1)
	cfg, err := loadConfig(*path, true)
	if err != nil {
		return err
	}
	cc := &cfg.Chains[0]
	if *chainFlag != "" {
		if cc, err = cfg.chain(*chainFlag); err != nil {
			return err
		}
	}
	if cc.Family != "evm" || len(cc.Tokens) == 0 {
		return fmt.Errorf("chain %s has no EVM token to pay with", cc.Name)
	}
	tok := cc.Tokens[0]
	if *tokenFlag != "" {
		tok = tokenConfig{Address: *tokenFlag, Symbol: "?", Decimals: tok.Decimals}
		for _, t := range cc.Tokens {
			if strings.EqualFold(t.Address, *tokenFlag) {
				tok = t
			}
		}
	}
	amount, err := chain.ParseUnits(amountStr, tok.Decimals)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(cmpOr(os.Getenv("SETTLE_DEV_DIR"), filepath.Join(".local", "dev")), "demo-api-key"))
	if err != nil {
		return fmt.Errorf("reading the demo key (is `make dev` running?): %w", err)
	}
	api := &apiClient{base: "http://" + cfg.API.Listen, key: strings.TrimSpace(string(raw))}
	sess, err := api.session(ctx, id)
	if err != nil {
		return err
	}
	receiver := ""
	if pm, ok := sess["paymentMethod"].(map[string]any); ok && pm["type"] == "evm" {
		receiver, _ = pm["receiverAddress"].(string)
	}
	if receiver == "" {
		if receiver, err = api.setEVM(ctx, id, sess["clientSecret"].(string)); err != nil {
			return err
		}
	}

	client, err := ethclient.DialContext(ctx, cc.RPCURL)
	if err != nil {
		return err
	}
	defer client.Close()
	hash, err := sendTransfer(ctx, client, common.HexToAddress(tok.Address), common.HexToAddress(receiver), amount)
	if err != nil {
		return fmt.Errorf("sending the deposit: %w", err)
	}
	fmt.Fprintf(stdout, "sent %s %s on %s from the dev payer %s to %s\n  tx %s\n", amountStr, tok.Symbol, cc.Name,
		anvil.DevAddress(devPayer).Hex(), receiver, hash.Hex())

	start, last := time.Now(), ""
	for time.Since(start) < 3*time.Minute {
		s, err := api.session(ctx, id)
		if err != nil {
			return err
		}
		status, _ := s["status"].(string)
		if status != last {
			fmt.Fprintf(stdout, "  %6.1fs  %s\n", time.Since(start).Seconds(), status)
			last = status
		}
		switch status {
		case "succeeded", "bounced", "expired":
			if d, ok := s["destination"].(map[string]any)["delivery"]; ok {
				j, _ := json.Marshal(d)
				fmt.Fprintf(stdout, "  delivery %s\n", j)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("session %s still %s after 3 minutes", id, last)
}

type apiClient struct{ base, key string }

func (a *apiClient) call(ctx context.Context, method, path string, body any, auth bool) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the API (is `make dev` running?): %w", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %v", method, path, resp.Status, out["error"])
	}
	return out, nil
}

func (a *apiClient) session(ctx context.Context, id string) (map[string]any, error) {
	out, err := a.call(ctx, "GET", "/v1/sessions/"+id, nil, true)
	if err != nil {
		return nil, err
	}
	s, _ := out["session"].(map[string]any)
	return s, nil
}

func (a *apiClient) setEVM(ctx context.Context, id, secret string) (string, error) {
	out, err := a.call(ctx, "POST", "/v1/sessions/"+id+"/paymentMethods",
		map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}}, false)
	if err != nil {
		return "", err
	}
	pm, _ := out["session"].(map[string]any)["paymentMethod"].(map[string]any)
	recv, _ := pm["receiverAddress"].(string)
	return recv, nil
}

// sendTransfer sends an ERC-20 transfer from the dev payer and waits for
// it to be mined.
func sendTransfer(ctx context.Context, c *ethclient.Client, token, to common.Address, amount *big.Int) (common.Hash, error) {
	key := anvil.DevKeys[devPayer]
	from := anvil.DevAddress(devPayer)
	data := append(common.FromHex("0xa9059cbb"), common.LeftPadBytes(to.Bytes(), 32)...)
	data = append(data, common.LeftPadBytes(amount.Bytes(), 32)...)
	chainID, err := c.ChainID(ctx)
	if err != nil {
		return common.Hash{}, err
	}
	nonce, err := c.PendingNonceAt(ctx, from)
	if err != nil {
		return common.Hash{}, err
	}
	gas, err := c.EstimateGas(ctx, ethereum.CallMsg{From: from, To: &token, Data: data})
	if err != nil {
		return common.Hash{}, fmt.Errorf("estimating gas (does the payer hold the token?): %w", err)
	}
	head, err := c.HeaderByNumber(ctx, nil)
	if err != nil {
		return common.Hash{}, err
	}
	tip := big.NewInt(1e9)
	feeCap := new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas * 5 / 4, To: &token, Data: data,
	})
	if err != nil {
		return common.Hash{}, err
	}
	if err := c.SendTransaction(ctx, tx); err != nil {
		return common.Hash{}, err
	}
	for range 300 {
		r, err := c.TransactionReceipt(ctx, tx.Hash())
		if err == nil {
			if r.Status != 1 {
				return tx.Hash(), fmt.Errorf("transfer reverted")
			}
			return tx.Hash(), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return tx.Hash(), fmt.Errorf("transfer not mined after 30s")
}
