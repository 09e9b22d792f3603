package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/fiat/sandbox"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/internal/store"
)

const onrampKey = 4 // anvil dev account

// The fiat method end to end short of the indexer: the API hands out the
// sandbox's hosted URL, its page shows the pretend local amount, and paying
// sends exactly the session's amount of the token to the session's
// receiver, once however often the form is posted.
func TestSandboxOnrampPaysTheReceiver(t *testing.T) {
	ctx := context.Background()
	n := anviltest.Start(t, anvil.Config{ChainID: 31337})
	usdc, err := n.DeployTestToken(ctx, anvil.DevKeys[0], "USD Coin", "USDC", 6)
	if err != nil {
		t.Fatal(err)
	}
	wallet := anvil.DevKeys[onrampKey]
	if _, err := n.Mint(ctx, anvil.DevKeys[0], usdc, anvil.DevAddress(onrampKey), big.NewInt(1_000_000_000)); err != nil {
		t.Fatal(err)
	}
	client, err := ethclient.Dial(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	tok := chain.Token{Symbol: "USDC", Address: strings.ToLower(usdc.Hex()), Decimals: 6}
	registry, err := chain.NewRegistry([]chain.Chain{{ID: 31337, Name: "Dev", Family: chain.FamilyEVM, Indexed: true, Tokens: []chain.Token{tok}}})
	if err != nil {
		t.Fatal(err)
	}
	db := dbtest.Migrated(t)
	st := store.New(db.PG)
	m, err := st.CreateMerchant(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := st.CreateAPIKey(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	master, err := hdwallet.MasterFromSeed(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	xpub, _ := master.AccountXPub()
	receivers, err := hdwallet.ParseXPub(xpub)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	onramp, err := sandbox.New(sandbox.Config{PublicURL: base, ChainID: 31337, Client: client, Token: tok, Wallet: wallet})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Chains: registry, Store: st, EVMReceivers: receivers, PublicURL: base,
		Fiat: onramp, Mount: map[string]http.Handler{sandbox.Path: onramp}})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)

	call := func(method, path string, body any, auth bool) map[string]any {
		t.Helper()
		j, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(j))
		req.Header.Set("Content-Type", "application/json")
		if auth {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		return out
	}
	created := call("POST", "/v1/sessions", map[string]any{
		"destination": map[string]any{"type": "evm", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "chainId": 31337, "tokenAddress": usdc.Hex(), "amountUnits": "12.5"},
		"display":     map[string]any{"title": "Top up"},
	}, true)["session"].(map[string]any)
	id, secret := created["sessionId"].(string), created["clientSecret"].(string)
	pm := call("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "fiat", "fiatMethod": "interac"}}, false)
	fiat := pm["fiat"].(map[string]any)
	hosted, _ := fiat["hostedUrl"].(string)
	if !strings.HasPrefix(hosted, base+sandbox.Path+"?o=") || fiat["fiatMethod"] != "interac" {
		t.Fatalf("fiat = %v", fiat)
	}
	spm := pm["session"].(map[string]any)["paymentMethod"].(map[string]any)
	if spm["type"] != "fiat" || spm["receiverAddress"] != nil || spm["fiatMethod"] != "interac" || pm["session"].(map[string]any)["status"] != "waiting_payment" {
		t.Errorf("session payment method = %v", pm["session"])
	}
	// Retrying gives the same URL and the same receiver.
	again := call("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "fiat", "fiatMethod": "interac"}}, false)
	if again["fiat"].(map[string]any)["hostedUrl"] != hosted {
		t.Errorf("second hostedUrl differs")
	}
	var receiver string
	if err := db.PG.QueryRow(ctx, `SELECT address FROM receivers WHERE session_id = $1`, id).Scan(&receiver); err != nil {
		t.Fatal(err)
	}

	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := get(hosted)
	if status != 200 || !strings.Contains(body, "CA$17.12 CAD") || !strings.Contains(body, "12.5 USDC") {
		t.Fatalf("hosted page: %d\n%s", status, body)
	}
	u, _ := url.Parse(hosted)
	order := u.Query().Get("o")
	// A forged order (another receiver) is refused.
	if st, _ := get(base + sandbox.Path + "?o=" + strings.Replace(order, order[:4], "AAAA", 1)); st != 404 {
		t.Errorf("forged order: %d", st)
	}
	for range 2 {
		resp, err := http.PostForm(base+sandbox.Path, url.Values{"o": {order}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `id="tx"`) {
			t.Fatalf("pay: %d %s", resp.StatusCode, b)
		}
	}
	bal := balance(t, client, usdc, common.HexToAddress(receiver))
	if bal.Cmp(big.NewInt(12_500_000)) != 0 {
		t.Errorf("receiver holds %s units, want 12500000 (paid once)", bal)
	}
}

func balance(t *testing.T, c *ethclient.Client, token, owner common.Address) *big.Int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := append(common.FromHex("0x70a08231"), common.LeftPadBytes(owner.Bytes(), 32)...)
	out, err := c.CallContract(ctx, ethereumCall(token, data), nil)
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(out)
}

func ethereumCall(to common.Address, data []byte) ethereum.CallMsg {
	return ethereum.CallMsg{To: &to, Data: data}
}
