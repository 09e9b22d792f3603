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
	"net/url"
	"os"
	"path/filepath"
	"regexp"
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
		return fmt.Errorf("usage: settle dev pay [-chain NAME] [-token ADDRESS] SESSION_ID|PAYMENT_ID AMOUNT")
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
	// A Sessions API id is 32 hex digits; anything else is taken for a
	// Payments API id (base58, which has no 0).
	isPayment := !devSessionID.MatchString(id)
	var receiver string
	if isPayment {
		if receiver, err = api.choosePaymentToken(ctx, id, cc.ID, common.HexToAddress(tok.Address)); err != nil {
			return err
		}
	} else {
		sess, err := api.session(ctx, id)
		if err != nil {
			return err
		}
		if pm, ok := sess["paymentMethod"].(map[string]any); ok && pm["type"] == "evm" {
			receiver, _ = pm["receiverAddress"].(string)
		}
		if receiver == "" {
			if receiver, err = api.setEVM(ctx, id, sess["clientSecret"].(string)); err != nil {
				return err
			}
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

	if isPayment {
		return api.followPayment(ctx, stdout, id)
	}
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

var devSessionID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// choosePaymentToken does what a payer does on the payment's checkout
// page: picks the chain and token (the page's form), then reads the
// single-use receiver the page shows.
func (a *apiClient) choosePaymentToken(ctx context.Context, id string, chainID uint64, token common.Address) (string, error) {
	p, err := a.payment(ctx, id)
	if err != nil {
		return "", err
	}
	// A payer would see the page say it is paid; a second transfer would
	// only make an after_session_finished exception.
	if st := p["status"]; st != "payment_unpaid" {
		return "", fmt.Errorf("payment %s is %v: nothing to pay", id, st)
	}
	form := url.Values{"id": {id}, "pay": {fmt.Sprintf("%d:%s", chainID, token.Hex())}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/checkout/select", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// The page answers a choice with a redirect back to itself.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		return "", fmt.Errorf("choosing the token on the checkout page (is `make dev` running?): %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return "", fmt.Errorf("choosing %s on chain %d for payment %s: the checkout page answered %s (is the token accepted there?)", token.Hex(), chainID, id, resp.Status)
	}
	st, err := a.call(ctx, http.MethodGet, "/checkout/status?"+url.Values{"id": {id}}.Encode(), nil, "")
	if err != nil {
		return "", err
	}
	recv, _ := st["receiverAddress"].(string)
	if recv == "" {
		return "", fmt.Errorf("payment %s has no receiver address (state %v)", id, st["state"])
	}
	return recv, nil
}

func (a *apiClient) payment(ctx context.Context, id string) (map[string]any, error) {
	return a.call(ctx, http.MethodGet, "/api/payment/"+url.PathEscape(id), nil, "Api-Key")
}

// followPayment prints the payment's status changes until it completes,
// bounces, or its page shows it expired.
func (a *apiClient) followPayment(ctx context.Context, stdout io.Writer, id string) error {
	start, last := time.Now(), ""
	for time.Since(start) < 3*time.Minute {
		p, err := a.payment(ctx, id)
		if err != nil {
			return err
		}
		status, _ := p["status"].(string)
		if status != last {
			fmt.Fprintf(stdout, "  %6.1fs  %s\n", time.Since(start).Seconds(), status)
			last = status
		}
		switch status {
		case "payment_completed", "payment_bounced":
			if d, ok := p["destination"]; ok {
				j, _ := json.Marshal(d)
				fmt.Fprintf(stdout, "  destination %s\n", j)
			}
			return nil
		case "payment_unpaid":
			st, err := a.call(ctx, http.MethodGet, "/checkout/status?"+url.Values{"id": {id}}.Encode(), nil, "")
			if err == nil && st["state"] == "expired" {
				return fmt.Errorf("payment %s expired before the deposit counted", id)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("payment %s still %s after 3 minutes", id, last)
}

type apiClient struct{ base, key string }

// call sends a JSON request; auth names how the demo key goes along:
// "Bearer" (Sessions API), "Api-Key" (Payments API) or "" (none).
func (a *apiClient) call(ctx context.Context, method, path string, body any, auth string) (map[string]any, error) {
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
	switch auth {
	case "Bearer":
		req.Header.Set("Authorization", "Bearer "+a.key)
	case "Api-Key":
		req.Header.Set("Api-Key", a.key)
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
	out, err := a.call(ctx, "GET", "/v1/sessions/"+id, nil, "Bearer")
	if err != nil {
		return nil, err
	}
	s, _ := out["session"].(map[string]any)
	return s, nil
}

func (a *apiClient) setEVM(ctx context.Context, id, secret string) (string, error) {
	out, err := a.call(ctx, "POST", "/v1/sessions/"+id+"/paymentMethods",
		map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}}, "")
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
