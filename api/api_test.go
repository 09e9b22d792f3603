package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/hdwallet"
	"github.com/settle-dev/settle/internal/mirror"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/reconciler"
)

// Mainnet addresses from reference/api.md.
const (
	baseUSDC     = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
	baseDAI      = "0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb"
	opUSDC       = "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85"
	solanaUSDC   = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
	payee        = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" // EIP-55 vector
	payeeBadSum  = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
	solanaPayee  = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
	otherSession = "0123456789abcdef0123456789abcdef"
	// Settle's own addresses in the test config (EIP-55 vectors, so they
	// have letters in both cases).
	treasury     = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
	baseExecutor = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
	opExecutor   = "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"
	zeroAddress  = "0x0000000000000000000000000000000000000000"
)

type bundle struct {
	t      testing.TB
	url    string
	key    string // merchant A
	keyB   string // merchant B
	db     dbtest.DBs
	store  *store.Store
	xpub   *hdwallet.Receivers
	mirror *mirror.Mirror
	now    atomic.Int64 // unix nanoseconds
	logs   *syncBuffer
	reg    *prometheus.Registry
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup starts an API over a fresh database. tweaks adjust its config
// before the server is built.
func setup(t testing.TB, tweaks ...func(*api.Config)) *bundle {
	t.Helper()
	b := &bundle{t: t, db: dbtest.Migrated(t), logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	b.now.Store(time.Unix(1_700_000_000, 0).UnixNano())
	b.store = store.New(b.db.PG)
	ctx := context.Background()
	for i, dst := range []*string{&b.key, &b.keyB} {
		m, err := b.store.CreateMerchant(ctx, fmt.Sprintf("merchant %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if *dst, _, err = b.store.CreateAPIKey(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
	}
	chains, err := chain.NewRegistry([]chain.Chain{
		{ID: 8453, Name: "Base", Family: chain.FamilyEVM, Executor: baseExecutor, Indexed: true, Tokens: []chain.Token{
			{Symbol: "USDC", Address: baseUSDC, Decimals: 6},
			{Symbol: "DAI", Address: baseDAI, Decimals: 18},
		}},
		{ID: 10, Name: "Optimism", Family: chain.FamilyEVM, Executor: opExecutor, Indexed: true, Tokens: []chain.Token{{Symbol: "USDC", Address: opUSDC, Decimals: 6}}},
		{ID: chain.SolanaChainID, Name: "Solana", Family: chain.FamilySolana, Tokens: []chain.Token{{Symbol: "USDC", Address: solanaUSDC, Decimals: 6}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	seed := bytes.Repeat([]byte{7}, 32)
	master, err := hdwallet.MasterFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	xpub, err := master.AccountXPub()
	if err != nil {
		t.Fatal(err)
	}
	if b.xpub, err = hdwallet.ParseXPub(xpub); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, bench := t.(*testing.B); bench {
		logger = slog.New(slog.DiscardHandler)
	}
	b.mirror = mirror.New(mirror.Config{Store: b.store, ClickHouse: b.db.CH, Logger: logger})
	cfg := api.Config{
		Chains:       chains,
		Store:        b.store,
		EVMReceivers: b.xpub,
		Treasury:     treasury,
		PublicURL:    "https://pay.example.test/",
		Ready: map[string]func(context.Context) error{
			"postgres":   b.db.PG.Ping,
			"clickhouse": b.db.CH.Ping,
		},
		Logger:     logger,
		Registerer: b.reg,
		Now:        func() time.Time { return time.Unix(0, b.now.Load()) },
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	b.url = ts.URL
	return b
}

func (b *bundle) advance(d time.Duration) { b.now.Add(int64(d)) }

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (b *bundle) do(method, path string, body any, header ...string) response {
	b.t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			b.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.url+path, r)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			b.t.Fatalf("%s %s: response is not a JSON object: %q", method, path, raw)
		}
	}
	return out
}

func (b *bundle) bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// validCreate returns a fresh create body that the API accepts.
func validCreate() map[string]any {
	return map[string]any{
		"destination": map[string]any{
			"type": "evm", "address": payee, "chainId": 8453,
			"tokenAddress": baseUSDC, "amountUnits": "10.00",
		},
		"display":  map[string]any{"title": "Deposit to Acme", "verb": "Deposit"},
		"metadata": map[string]any{"orderId": "123"},
	}
}

// create makes a session and returns (id, clientSecret).
func (b *bundle) create(key string) (string, string) {
	b.t.Helper()
	r := b.do("POST", "/v1/sessions", validCreate(), b.bearer(key)...)
	if r.Status != http.StatusCreated {
		b.t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	s := r.Body["session"].(map[string]any)
	return s["sessionId"].(string), s["clientSecret"].(string)
}

func errorOf(t *testing.T, r response) (typ, code, param string) {
	t.Helper()
	e, ok := r.Body["error"].(map[string]any)
	if !ok {
		t.Fatalf("response %d has no error envelope: %s", r.Status, r.Raw)
	}
	if len(r.Body) != 1 {
		t.Errorf("error response has extra top-level fields: %s", r.Raw)
	}
	if m, _ := e["message"].(string); m == "" {
		t.Errorf("error without a message: %s", r.Raw)
	}
	p, _ := e["param"].(string)
	return e["type"].(string), e["code"].(string), p
}

// set returns a copy of body with the value at a dotted path replaced
// (or removed, for the special value del).
type deleted struct{}

var del deleted

func set(body map[string]any, path string, v any) map[string]any {
	j, _ := json.Marshal(body)
	var out map[string]any
	_ = json.Unmarshal(j, &out)
	parts := strings.Split(path, ".")
	m := out
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	if _, ok := v.(deleted); ok {
		delete(m, parts[len(parts)-1])
	} else {
		m[parts[len(parts)-1]] = v
	}
	return out
}

func TestCreateSessionValidation(t *testing.T) {
	b := setup(t)
	// A receiver handed out to another merchant's session, as the API
	// returns it (checksummed).
	rid, rsecret := b.create(b.keyB)
	pm := b.do("POST", "/v1/sessions/"+rid+"/paymentMethods", map[string]any{"clientSecret": rsecret, "paymentMethod": map[string]any{"type": "evm"}})
	if pm.Status != 200 {
		t.Fatalf("payment method: %d %s", pm.Status, pm.Raw)
	}
	receiver := pm.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)
	upper := func(a string) string { return "0x" + strings.ToUpper(a[2:]) }
	onOptimism := set(set(validCreate(), "destination.chainId", 10), "destination.tokenAddress", opUSDC)
	solanaDest := map[string]any{
		"destination": map[string]any{"type": "solana", "address": solanaPayee, "tokenAddress": solanaUSDC, "amountUnits": "10.00"},
		"display":     map[string]any{"title": "t", "verb": "v"},
	}
	many := map[string]any{}
	for i := range 51 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	tests := []struct {
		name   string
		body   any
		status int
		typ    string
		code   string
		param  string
	}{
		{"valid", validCreate(), 201, "", "", ""},
		{"lowercase address accepted", set(validCreate(), "destination.address", strings.ToLower(payee)), 201, "", "", ""},
		{"lowercase token accepted", set(validCreate(), "destination.tokenAddress", strings.ToLower(baseUSDC)), 201, "", "", ""},
		{"open amount", set(validCreate(), "destination.amountUnits", del), 201, "", "", ""},
		{"18 decimals exact", set(set(validCreate(), "destination.tokenAddress", baseDAI), "destination.amountUnits", "1.123456789012345678"), 201, "", "", ""},
		{"calldata", set(validCreate(), "destination.calldata", "0xa9059cbb"), 201, "", "", ""},
		{"refund address", set(validCreate(), "refundAddress", payee), 201, "", "", ""},
		{"no metadata", set(validCreate(), "metadata", del), 201, "", "", ""},
		{"null metadata", set(validCreate(), "metadata", nil), 201, "", "", ""},
		{"theme url", set(validCreate(), "display.themeCssUrl", "https://acme.example/theme.css"), 201, "", "", ""},
		{"solana destination", map[string]any{
			"destination": map[string]any{"type": "solana", "address": solanaPayee, "tokenAddress": solanaUSDC, "amountUnits": "10.00"},
			"display":     map[string]any{"title": "t", "verb": "v"},
		}, 201, "", "", ""},

		{"not json", "{", 400, "validation_error", "invalid_json", ""},
		{"array body", "[]", 400, "validation_error", "invalid_json", ""},
		{"trailing data", `{"destination":null} {}`, 400, "validation_error", "invalid_json", ""},
		{"unknown field", set(validCreate(), "expiresIn", 5), 400, "validation_error", "unknown_field", "expiresIn"},
		{"unknown nested field", set(validCreate(), "destination.memo", "x"), 400, "validation_error", "unknown_field", "memo"},
		{"missing destination", set(validCreate(), "destination", del), 400, "validation_error", "missing_field", "destination"},
		{"missing type", set(validCreate(), "destination.type", del), 400, "validation_error", "missing_field", "destination.type"},
		{"bad type", set(validCreate(), "destination.type", "btc"), 400, "validation_error", "invalid_value", "destination.type"},
		{"missing chainId", set(validCreate(), "destination.chainId", del), 400, "validation_error", "missing_field", "destination.chainId"},
		{"chainId as string", set(validCreate(), "destination.chainId", "8453"), 400, "validation_error", "invalid_type", "destination.chainId"},
		{"negative chainId", set(validCreate(), "destination.chainId", -1), 400, "validation_error", "invalid_type", "destination.chainId"},
		{"unsupported chain", set(validCreate(), "destination.chainId", 1), 400, "validation_error", "unsupported_chain", "destination.chainId"},
		{"solana chain id for evm", set(validCreate(), "destination.chainId", 501), 400, "validation_error", "unsupported_chain", "destination.chainId"},
		{"short address", set(validCreate(), "destination.address", "0x1234"), 400, "validation_error", "invalid_address", "destination.address"},
		{"address without 0x", set(validCreate(), "destination.address", payee[2:]), 400, "validation_error", "invalid_address", "destination.address"},
		{"address bad checksum", set(validCreate(), "destination.address", payeeBadSum), 400, "validation_error", "invalid_checksum", "destination.address"},
		{"token bad checksum", set(validCreate(), "destination.tokenAddress", "0x833589fcD6eDb6E08f4c7C32D4f71b54bdA02913"), 400, "validation_error", "invalid_checksum", "destination.tokenAddress"},
		{"unknown token", set(validCreate(), "destination.tokenAddress", payee), 400, "validation_error", "unsupported_token", "destination.tokenAddress"},
		{"token of another chain", set(validCreate(), "destination.tokenAddress", opUSDC), 400, "validation_error", "unsupported_token", "destination.tokenAddress"},
		{"too many decimals", set(validCreate(), "destination.amountUnits", "10.1234567"), 400, "validation_error", "too_many_decimals", "destination.amountUnits"},
		{"negative amount", set(validCreate(), "destination.amountUnits", "-1"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"plus sign", set(validCreate(), "destination.amountUnits", "+1"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"exponent", set(validCreate(), "destination.amountUnits", "1e6"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"spaces", set(validCreate(), "destination.amountUnits", " 1"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"thousands separator", set(validCreate(), "destination.amountUnits", "1,000"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"hex amount", set(validCreate(), "destination.amountUnits", "0x10"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"empty amount", set(validCreate(), "destination.amountUnits", ""), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"zero amount", set(validCreate(), "destination.amountUnits", "0.00"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
		{"amount as number", set(validCreate(), "destination.amountUnits", 10), 400, "validation_error", "invalid_type", "destination.amountUnits"},
		{"calldata not hex", set(validCreate(), "destination.calldata", "0xzz"), 400, "validation_error", "invalid_calldata", "destination.calldata"},
		{"calldata odd length", set(validCreate(), "destination.calldata", "0xabc"), 400, "validation_error", "invalid_calldata", "destination.calldata"},
		{"calldata without 0x", set(validCreate(), "destination.calldata", "abcd"), 400, "validation_error", "invalid_calldata", "destination.calldata"},
		{"metadata number value", set(validCreate(), "metadata.orderId", 5), 400, "validation_error", "invalid_type", "metadata"},
		{"metadata too many keys", set(validCreate(), "metadata", many), 400, "validation_error", "too_many_keys", "metadata"},
		{"metadata long key", set(validCreate(), "metadata", map[string]any{strings.Repeat("k", 41): "v"}), 400, "validation_error", "invalid_metadata", "metadata"},
		{"metadata empty key", set(validCreate(), "metadata", map[string]any{"": "v"}), 400, "validation_error", "invalid_metadata", "metadata"},
		{"metadata long value", set(validCreate(), "metadata", map[string]any{"k": strings.Repeat("v", 501)}), 400, "validation_error", "invalid_metadata", "metadata.k"},
		{"refund address pattern", set(validCreate(), "refundAddress", "0x12"), 400, "validation_error", "invalid_address", "refundAddress"},
		{"refund address checksum", set(validCreate(), "refundAddress", payeeBadSum), 400, "validation_error", "invalid_checksum", "refundAddress"},
		{"missing display", set(validCreate(), "display", del), 400, "validation_error", "missing_field", "display"},
		{"missing title", set(validCreate(), "display.title", del), 400, "validation_error", "missing_field", "display.title"},
		{"long title", set(validCreate(), "display.title", strings.Repeat("x", 201)), 400, "validation_error", "too_long", "display.title"},
		{"bad theme url", set(validCreate(), "display.themeCssUrl", "javascript:alert(1)"), 400, "validation_error", "invalid_url", "display.themeCssUrl"},
		{"solana bad address", map[string]any{
			"destination": map[string]any{"type": "solana", "address": "0OIl", "tokenAddress": solanaUSDC},
			"display":     map[string]any{"title": "t"},
		}, 400, "validation_error", "invalid_address", "destination.address"},
		{"solana with chainId", map[string]any{
			"destination": map[string]any{"type": "solana", "address": solanaPayee, "tokenAddress": solanaUSDC, "chainId": 501},
			"display":     map[string]any{"title": "t"},
		}, 400, "validation_error", "invalid_value", "destination.chainId"},
		{"solana unknown mint", map[string]any{
			"destination": map[string]any{"type": "solana", "address": solanaPayee, "tokenAddress": solanaPayee},
			"display":     map[string]any{"title": "t"},
		}, 400, "validation_error", "unsupported_token", "destination.tokenAddress"},
		{"body too large", set(validCreate(), "display.title", strings.Repeat("x", 70<<10)), 413, "invalid_request_error", "body_too_large", ""},

		// Payees that would burn the tokens or are settle's own.
		{"zero address destination", set(validCreate(), "destination.address", zeroAddress), 400, "validation_error", "invalid_address", "destination.address"},
		{"zero address refund", set(validCreate(), "refundAddress", zeroAddress), 400, "validation_error", "invalid_address", "refundAddress"},
		{"treasury destination", set(validCreate(), "destination.address", treasury), 400, "validation_error", "reserved_address", "destination.address"},
		{"treasury destination lowercase", set(validCreate(), "destination.address", strings.ToLower(treasury)), 400, "validation_error", "reserved_address", "destination.address"},
		{"treasury refund", set(validCreate(), "refundAddress", treasury), 400, "validation_error", "reserved_address", "refundAddress"},
		{"treasury refund uppercase", set(validCreate(), "refundAddress", upper(treasury)), 400, "validation_error", "reserved_address", "refundAddress"},
		{"treasury refund on a solana session", set(solanaDest, "refundAddress", treasury), 400, "validation_error", "reserved_address", "refundAddress"},
		{"executor destination", set(validCreate(), "destination.address", baseExecutor), 400, "validation_error", "reserved_address", "destination.address"},
		{"executor destination lowercase", set(validCreate(), "destination.address", strings.ToLower(baseExecutor)), 400, "validation_error", "reserved_address", "destination.address"},
		{"executor destination on its chain", set(onOptimism, "destination.address", opExecutor), 400, "validation_error", "reserved_address", "destination.address"},
		{"another chain's executor as destination", set(validCreate(), "destination.address", opExecutor), 201, "", "", ""},
		{"executor refund", set(validCreate(), "refundAddress", baseExecutor), 400, "validation_error", "reserved_address", "refundAddress"},
		{"another chain's executor as refund", set(validCreate(), "refundAddress", strings.ToLower(opExecutor)), 400, "validation_error", "reserved_address", "refundAddress"},
		{"receiver destination", set(validCreate(), "destination.address", receiver), 400, "validation_error", "reserved_address", "destination.address"},
		{"receiver destination lowercase", set(validCreate(), "destination.address", strings.ToLower(receiver)), 400, "validation_error", "reserved_address", "destination.address"},
		{"receiver destination on another chain", set(onOptimism, "destination.address", upper(receiver)), 400, "validation_error", "reserved_address", "destination.address"},
		{"receiver refund", set(validCreate(), "refundAddress", receiver), 400, "validation_error", "reserved_address", "refundAddress"},
		{"receiver refund lowercase", set(validCreate(), "refundAddress", strings.ToLower(receiver)), 400, "validation_error", "reserved_address", "refundAddress"},
		{"receiver refund on a solana session", set(solanaDest, "refundAddress", receiver), 400, "validation_error", "reserved_address", "refundAddress"},
		{"malformed beats reserved", set(set(validCreate(), "destination.address", treasury), "destination.amountUnits", "-1"), 400, "validation_error", "invalid_amount", "destination.amountUnits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do("POST", "/v1/sessions", tt.body, b.bearer(b.key)...)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Raw)
			}
			if tt.status == 201 {
				return
			}
			typ, code, param := errorOf(t, r)
			if typ != tt.typ || code != tt.code || param != tt.param {
				t.Errorf("error = (%s, %s, %q), want (%s, %s, %q): %s", typ, code, param, tt.typ, tt.code, tt.param, r.Raw)
			}
		})
	}
}

// nodeCode is a CodeChecker over real nodes, by chain id; chains it has no
// node for are unchecked.
type nodeCode map[uint64]*ethclient.Client

func (n nodeCode) HasCode(ctx context.Context, chainID uint64, address string) (bool, error) {
	cl, ok := n[chainID]
	if !ok {
		return false, api.ErrCodeUnchecked
	}
	code, err := cl.CodeAt(ctx, common.HexToAddress(address), nil)
	if err != nil {
		return false, fmt.Errorf("reading code of %s: %w", address, err)
	}
	return len(code) > 0, nil
}

// Calldata is executed against the destination, so the API asks the chain
// whether the destination has code. Base (8453) is an anvil here; Optimism
// has no node and is not checked.
func TestCreateSessionCalldataTarget(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 8453})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	contract, err := node.DeployTestToken(ctx, anvil.DevKeys[0], "Merchant", "M", 6)
	if err != nil {
		t.Fatal(err)
	}
	// A client of its own, so closing the node below leaves it dialing a
	// dead port rather than using a closed client.
	cl, err := ethclient.DialContext(ctx, node.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	b := setup(t, func(c *api.Config) { c.CodeChecker = nodeCode{8453: cl} })
	eoa := anvil.DevAddress(1).Hex() // funded, so it exists, but has no code
	withCalldata := set(validCreate(), "destination.calldata", "0xa9059cbb")
	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"calldata to an EOA", set(withCalldata, "destination.address", eoa), 400, "not_a_contract"},
		{"calldata to an address never used", withCalldata, 400, "not_a_contract"},
		{"calldata to a contract", set(withCalldata, "destination.address", contract.Hex()), 201, ""},
		{"calldata to a contract, lowercase", set(withCalldata, "destination.address", strings.ToLower(contract.Hex())), 201, ""},
		{"empty calldata to an EOA", set(withCalldata, "destination.calldata", "0x"), 201, ""},
		{"no calldata to an EOA", set(validCreate(), "destination.address", eoa), 201, ""},
		{"calldata on a chain without a node", set(set(withCalldata, "destination.chainId", 10), "destination.tokenAddress", opUSDC), 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do("POST", "/v1/sessions", tt.body, b.bearer(b.key)...)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Raw)
			}
			if tt.status == 201 {
				return
			}
			if typ, code, param := errorOf(t, r); typ != "validation_error" || code != tt.code || param != "destination.calldata" {
				t.Errorf("error = (%s, %s, %q), want (validation_error, %s, destination.calldata): %s", typ, code, param, tt.code, r.Raw)
			}
		})
	}

	// A node that does not answer fails the create, retryably, and creates
	// nothing: the check is not skipped.
	count := func() (n int) {
		t.Helper()
		if err := b.db.PG.QueryRow(ctx, "SELECT count(*) FROM sessions").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	r := b.do("POST", "/v1/sessions", set(withCalldata, "destination.address", contract.Hex()), b.bearer(b.key)...)
	if typ, code, _ := errorOf(t, r); r.Status != 503 || typ != "api_error" || code != "chain_unavailable" {
		t.Errorf("node down: %d %s, want 503 api_error chain_unavailable", r.Status, r.Raw)
	}
	if n := count(); n != before {
		t.Errorf("node down: %d sessions stored, want %d", n, before)
	}
	if !strings.Contains(b.logs.String(), "checking the destination's contract code failed") {
		t.Error("the node failure is not logged")
	}
	// Without calldata nothing asks the node.
	if r := b.do("POST", "/v1/sessions", validCreate(), b.bearer(b.key)...); r.Status != 201 {
		t.Errorf("no calldata, node down: %d %s", r.Status, r.Raw)
	}
}

func TestCreateSessionResponse(t *testing.T) {
	b := setup(t)
	body := set(set(validCreate(), "destination.calldata", "0xa9059cbb"), "display.themeCssUrl", "https://acme.example/t.css")
	r := b.do("POST", "/v1/sessions", body, b.bearer(b.key)...)
	if r.Status != 201 {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	s := r.Body["session"].(map[string]any)
	id, _ := s["sessionId"].(string)
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("sessionId %q is not 32 lowercase hex characters", id)
	}
	if secret, _ := s["clientSecret"].(string); len(secret) < 32 {
		t.Errorf("clientSecret %q carries fewer than 128 bits", secret)
	}
	if s["status"] != "requires_payment_method" || s["paymentMethod"] != nil {
		t.Errorf("new session: status %v, paymentMethod %v", s["status"], s["paymentMethod"])
	}
	wantDest := map[string]any{
		"type": "evm", "address": payee, "chainId": float64(8453), "chainName": "Base",
		"tokenAddress": baseUSDC, "tokenSymbol": "USDC", "amountUnits": "10.00", "calldata": "0xa9059cbb",
	}
	if got := s["destination"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(wantDest) {
		t.Errorf("destination = %v, want %v", got, wantDest)
	}
	if got := s["display"].(map[string]any); got["title"] != "Deposit to Acme" || got["verb"] != "Deposit" || got["themeCssUrl"] != "https://acme.example/t.css" {
		t.Errorf("display = %v", got)
	}
	if got := s["metadata"].(map[string]any); got["orderId"] != "123" {
		t.Errorf("metadata = %v", got)
	}
	created, expires := s["createdAt"].(float64), s["expiresAt"].(float64)
	if created != 1_700_000_000 || expires != created+3600 {
		t.Errorf("createdAt %v expiresAt %v, want 1700000000 and +3600", created, expires)
	}
	// The full view read back equals what create returned.
	g := b.do("GET", "/v1/sessions/"+id, nil, b.bearer(b.key)...)
	if g.Status != 200 || fmt.Sprint(g.Body) != fmt.Sprint(r.Body) {
		t.Errorf("GET full view differs from create:\n got %v\nwant %v", g.Body, r.Body)
	}
}

func TestAuth(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	idB, secretB := b.create(b.keyB)
	pm := func(secret string) map[string]any {
		return map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}}
	}
	notFound := b.do("GET", "/v1/sessions/"+otherSession, nil, b.bearer(b.key)...)
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		header []string
		status int
		code   string
	}{
		{"create without key", "POST", "/v1/sessions", validCreate(), nil, 401, "missing_api_key"},
		{"create with wrong key", "POST", "/v1/sessions", validCreate(), b.bearer(store.APIKeyPrefix + "nope"), 401, "invalid_api_key"},
		{"create with basic auth", "POST", "/v1/sessions", validCreate(), []string{"Authorization", "Basic " + b.key}, 401, "invalid_authorization"},
		{"get with wrong key", "GET", "/v1/sessions/" + id, nil, b.bearer("settle_sk_wrong"), 401, "invalid_api_key"},
		{"get another merchant's session", "GET", "/v1/sessions/" + idB, nil, b.bearer(b.key), 404, "session_not_found"},
		{"get missing session", "GET", "/v1/sessions/" + otherSession, nil, b.bearer(b.key), 404, "session_not_found"},
		{"get malformed id", "GET", "/v1/sessions/XYZ", nil, b.bearer(b.key), 404, "session_not_found"},
		{"get with another session's secret", "GET", "/v1/sessions/" + id + "?clientSecret=" + secretB, nil, nil, 401, "invalid_client_secret"},
		{"get with empty secret", "GET", "/v1/sessions/" + id + "?clientSecret=", nil, nil, 401, "missing_client_secret"},
		{"payment method without secret", "POST", "/v1/sessions/" + id + "/paymentMethods", map[string]any{"paymentMethod": map[string]any{"type": "evm"}}, nil, 401, "missing_client_secret"},
		{"payment method with another session's secret", "POST", "/v1/sessions/" + id + "/paymentMethods", pm(secretB), nil, 401, "invalid_client_secret"},
		{"payment method with the merchant's api key as secret", "POST", "/v1/sessions/" + id + "/paymentMethods", pm(b.key), nil, 401, "invalid_client_secret"},
		{"payment method on missing session", "POST", "/v1/sessions/" + otherSession + "/paymentMethods", pm(secret), nil, 404, "session_not_found"},
		{"check with another session's secret", "PUT", "/v1/sessions/" + id + "/check", map[string]any{"clientSecret": secretB}, nil, 401, "invalid_client_secret"},
		{"check without secret", "PUT", "/v1/sessions/" + id + "/check", map[string]any{}, nil, 401, "missing_client_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(tt.method, tt.path, tt.body, tt.header...)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Raw)
			}
			typ, code, _ := errorOf(t, r)
			wantType := map[int]string{401: "authentication_error", 404: "invalid_request_error"}[tt.status]
			if typ != wantType || code != tt.code {
				t.Errorf("error = (%s, %s), want (%s, %s)", typ, code, wantType, tt.code)
			}
			if tt.status == 404 && r.Raw != notFound.Raw {
				t.Errorf("404 body differs from a missing session's: %s vs %s", r.Raw, notFound.Raw)
			}
		})
	}

	t.Run("revoked key", func(t *testing.T) {
		m, err := b.store.CreateMerchant(context.Background(), "revoked")
		if err != nil {
			t.Fatal(err)
		}
		key, keyID, err := b.store.CreateAPIKey(context.Background(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r := b.do("POST", "/v1/sessions", validCreate(), b.bearer(key)...); r.Status != 201 {
			t.Fatalf("fresh key: %d %s", r.Status, r.Raw)
		}
		if err := b.store.RevokeAPIKey(context.Background(), keyID); err != nil {
			t.Fatal(err)
		}
		if err := b.store.RevokeAPIKey(context.Background(), keyID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("revoking twice: %v, want ErrNotFound", err)
		}
		r := b.do("POST", "/v1/sessions", validCreate(), b.bearer(key)...)
		if _, code, _ := errorOf(t, r); r.Status != 401 || code != "invalid_api_key" {
			t.Errorf("revoked key: %d %s, want 401 invalid_api_key", r.Status, r.Raw)
		}
	})

	t.Run("views", func(t *testing.T) {
		full := b.do("GET", "/v1/sessions/"+id, nil, b.bearer(b.key)...)
		anon := b.do("GET", "/v1/sessions/"+id, nil)
		withSecret := b.do("GET", "/v1/sessions/"+id+"?clientSecret="+secret, nil)
		for name, r := range map[string]response{"full": full, "anonymous": anon, "client secret": withSecret} {
			if r.Status != 200 {
				t.Fatalf("%s: status %d: %s", name, r.Status, r.Raw)
			}
		}
		fs := full.Body["session"].(map[string]any)
		if fs["clientSecret"] != secret || fs["metadata"] == nil {
			t.Errorf("full view lacks clientSecret or metadata: %s", full.Raw)
		}
		for name, r := range map[string]response{"anonymous": anon, "client secret": withSecret} {
			s := r.Body["session"].(map[string]any)
			if _, ok := s["clientSecret"]; ok {
				t.Errorf("%s view leaks clientSecret", name)
			}
			if _, ok := s["metadata"]; ok {
				t.Errorf("%s view leaks metadata", name)
			}
			if strings.Contains(r.Raw, secret) {
				t.Errorf("%s view contains the client secret", name)
			}
			if s["sessionId"] != id || s["status"] != "requires_payment_method" {
				t.Errorf("%s view: %v", name, s)
			}
		}
	})
}

func TestPaymentMethodEVM(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	body := map[string]any{"clientSecret": secret, "locale": "en-US", "paymentMethod": map[string]any{"type": "evm"}}
	r := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", body)
	if r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	s := r.Body["session"].(map[string]any)
	if s["status"] != "waiting_payment" {
		t.Errorf("status = %v, want waiting_payment", s["status"])
	}
	if _, ok := s["clientSecret"]; ok {
		t.Error("payment method response leaks clientSecret")
	}
	pm := s["paymentMethod"].(map[string]any)
	addr, _ := pm["receiverAddress"].(string)
	if pm["type"] != "evm" || pm["createdAt"] != float64(1_700_000_000) {
		t.Errorf("paymentMethod = %v", pm)
	}
	// The address is the checksummed derivation of the first index.
	want, err := b.xpub.Address(0)
	if err != nil {
		t.Fatal(err)
	}
	if addr != want.Hex() {
		t.Errorf("receiverAddress = %s, want %s (index 0, checksummed)", addr, want.Hex())
	}
	if _, err := chain.ParseEVMAddress(addr); err != nil || addr == strings.ToLower(addr) {
		t.Errorf("receiverAddress %s is not EIP-55 checksummed: %v", addr, err)
	}

	// Setting evm again is idempotent: same receiver, nothing new allocated.
	again := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", body)
	if again.Status != 200 || fmt.Sprint(again.Body) != fmt.Sprint(r.Body) {
		t.Errorf("second evm call changed the session:\n got %d %v\nwant %v", again.Status, again.Body, r.Body)
	}
	var n int
	if err := b.db.PG.QueryRow(context.Background(), "SELECT count(*) FROM receivers").Scan(&n); err != nil || n != 1 {
		t.Errorf("receivers after two calls = %d (%v), want 1", n, err)
	}

	// Every view shows the same payment method.
	for _, h := range [][]string{nil, b.bearer(b.key)} {
		g := b.do("GET", "/v1/sessions/"+id, nil, h...)
		if got := g.Body["session"].(map[string]any)["paymentMethod"]; fmt.Sprint(got) != fmt.Sprint(pm) {
			t.Errorf("GET paymentMethod = %v, want %v", got, pm)
		}
	}

	// The receiver reaches ClickHouse.
	if n, err := b.mirror.Flush(context.Background()); err != nil || n != 1 {
		t.Fatalf("mirror flush = %d, %v; want 1", n, err)
	}
	var chAddr, chSession string
	row := b.db.CH.QueryRow(context.Background(), "SELECT address, session_id FROM receivers FINAL WHERE family = 'evm'")
	if err := row.Scan(&chAddr, &chSession); err != nil {
		t.Fatal(err)
	}
	if chAddr != strings.ToLower(addr) || chSession != id {
		t.Errorf("clickhouse receiver = (%s, %s), want (%s, %s)", chAddr, chSession, strings.ToLower(addr), id)
	}
	if n, err := b.mirror.Flush(context.Background()); err != nil || n != 0 {
		t.Errorf("second flush = %d, %v; want nothing left to mirror", n, err)
	}

	t.Run("other methods not enabled", func(t *testing.T) {
		for _, p := range []map[string]any{
			{"type": "tron", "amountUsd": 10},
			{"type": "solana", "walletAddress": solanaPayee, "inputTokenMint": solanaUSDC, "amountUsd": 10},
			{"type": "fiat", "fiatMethod": "interac"},
		} {
			r := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "locale": "en-US", "paymentMethod": p})
			typ, code, param := errorOf(t, r)
			if r.Status != 400 || typ != "invalid_request_error" || code != "payment_method_not_enabled" || param != "paymentMethod.type" {
				t.Errorf("%v: %d %s", p["type"], r.Status, r.Raw)
			}
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			body        any
			code, param string
		}{
			{map[string]any{"clientSecret": secret}, "missing_field", "paymentMethod"},
			{map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{}}, "missing_field", "paymentMethod.type"},
			{map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "card"}}, "invalid_value", "paymentMethod.type"},
			{map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}, "extra": 1}, "unknown_field", "extra"},
		} {
			r := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", tc.body)
			typ, code, param := errorOf(t, r)
			if r.Status != 400 || typ != "validation_error" || code != tc.code || param != tc.param {
				t.Errorf("%v: %d %s", tc.body, r.Status, r.Raw)
			}
		}
	})
}

func TestExpiry(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	idPM, secretPM := b.create(b.key)
	pm := func(id, secret string) response {
		return b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	}
	if r := pm(idPM, secretPM); r.Status != 200 {
		t.Fatalf("payment method: %d %s", r.Status, r.Raw)
	}
	b.advance(time.Hour - time.Second)
	if s := b.do("GET", "/v1/sessions/"+id, nil).Body["session"].(map[string]any); s["status"] != "requires_payment_method" {
		t.Fatalf("one second before expiry: status %v", s["status"])
	}
	b.advance(time.Second)
	// Past expiresAt the API reads expired at once, before any loop ran.
	for _, sid := range []string{id, idPM} {
		for _, h := range [][]string{nil, b.bearer(b.key)} {
			if s := b.do("GET", "/v1/sessions/"+sid, nil, h...).Body["session"].(map[string]any); s["status"] != "expired" {
				t.Errorf("GET %s at expiry: status %v, want expired", sid, s["status"])
			}
		}
		r := b.do("PUT", "/v1/sessions/"+sid+"/check", map[string]any{"clientSecret": map[string]string{id: secret, idPM: secretPM}[sid]})
		if s := r.Body["session"].(map[string]any); s["status"] != "expired" {
			t.Errorf("check %s: status %v, want expired", sid, s["status"])
		}
	}
	// A terminal session refuses a payment method.
	r := pm(id, secret)
	if typ, code, _ := errorOf(t, r); r.Status != 409 || typ != "invalid_request_error" || code != "session_not_open" {
		t.Errorf("payment method on expired session: %d %s", r.Status, r.Raw)
	}

	// The loop persists it, with an outbox event, once.
	ex := reconciler.NewExpirer(reconciler.ExpiryConfig{Store: b.store, Now: func() time.Time { return time.Unix(0, b.now.Load()) }})
	if n, err := ex.RunOnce(context.Background()); err != nil || n != 2 {
		t.Fatalf("expirer = %d, %v; want 2", n, err)
	}
	if n, err := ex.RunOnce(context.Background()); err != nil || n != 0 {
		t.Fatalf("second expirer run = %d, %v; want 0", n, err)
	}
	var status string
	var events int
	ctx := context.Background()
	if err := b.db.PG.QueryRow(ctx, "SELECT status FROM sessions WHERE id = $1", id).Scan(&status); err != nil || status != "expired" {
		t.Errorf("stored status = %q, %v", status, err)
	}
	if err := b.db.PG.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE topic = 'session.expired'").Scan(&events); err != nil || events != 2 {
		t.Errorf("expired outbox events = %d, %v; want 2", events, err)
	}
	// Terminal stays terminal, however the clock moves.
	b.now.Store(time.Unix(1_700_000_000, 0).UnixNano())
	if s := b.do("GET", "/v1/sessions/"+id, nil).Body["session"].(map[string]any); s["status"] != "expired" {
		t.Errorf("persisted expiry changed to %v", s["status"])
	}
}

// A session with a receiver reads as expired only once every chain's
// reconciler has read past its deadline: a deposit mined in time can still
// be attributed after the deadline, and expired, once read, is final.
func TestExpiryWaitsForReconcilers(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id, secret := b.create(b.key)
	bare, _ := b.create(b.key)
	evmMethod := func() response {
		return b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	}
	if r := evmMethod(); r.Status != 200 {
		t.Fatalf("payment method: %d %s", r.Status, r.Raw)
	}
	deadline := time.Unix(0, b.now.Load()).Add(time.Hour)
	// Payers can pay on chains 1 and 10; the times are those of final
	// attributed blocks.
	b.store.ExpectChains(1, 10)
	cursor := func(chainID int64, blockTime time.Time) {
		t.Helper()
		const q = `INSERT INTO reconciler_cursors (chain_id, number, hash, block_time, final_number, final_block_time) VALUES ($1, 1, '0x01', $2, 1, $2)
			ON CONFLICT (chain_id) DO UPDATE SET block_time = excluded.block_time, final_block_time = excluded.final_block_time`
		if _, err := b.db.PG.Exec(ctx, q, chainID, blockTime); err != nil {
			t.Fatal(err)
		}
	}
	status := func(id string) any {
		t.Helper()
		return b.do("GET", "/v1/sessions/"+id, nil, b.bearer(b.key)...).Body["session"].(map[string]any)["status"]
	}
	ex := reconciler.NewExpirer(reconciler.ExpiryConfig{Store: b.store, Now: func() time.Time { return time.Unix(0, b.now.Load()) }})

	// One chain read past the deadline, the other one second short of it.
	cursor(1, deadline.Add(time.Minute))
	cursor(10, deadline.Add(-time.Second))
	b.advance(2 * time.Hour)
	if st := status(id); st != "waiting_payment" {
		t.Errorf("past the deadline, one chain not read that far: status %v, want waiting_payment", st)
	}
	if st := status(bare); st != "expired" {
		t.Errorf("no receiver, past the deadline: status %v, want expired", st)
	}
	// Retrying the same method answers as before; a new one is refused.
	if r := evmMethod(); r.Status != 200 {
		t.Errorf("same payment method again past the deadline: %d %s", r.Status, r.Raw)
	}
	// Only evm is enabled over HTTP, so a switch of method is asked of the
	// store directly.
	derive := func(uint32) (string, error) {
		t.Error("derived a receiver past the deadline")
		return "", errors.New("no")
	}
	if _, _, err := b.store.SetReceiverPaymentMethod(ctx, id, "tron", "tron", derive, time.Unix(0, b.now.Load())); !errors.Is(err, store.ErrConflict) {
		t.Errorf("new payment method past the deadline: %v, want a conflict", err)
	}
	if n, err := ex.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("expirer = %d, %v; want 1 (only the session without a receiver)", n, err)
	}

	// The lagging chain reaches a block stamped at the deadline: now known.
	cursor(10, deadline)
	if st := status(id); st != "expired" {
		t.Errorf("every chain read to the deadline: status %v, want expired", st)
	}
	if n, err := ex.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("expirer = %d, %v; want 1", n, err)
	}
	var stored string
	if err := b.db.PG.QueryRow(ctx, "SELECT status FROM sessions WHERE id = $1", id).Scan(&stored); err != nil || stored != "expired" {
		t.Errorf("stored status = %q, %v", stored, err)
	}
}

func TestCheck(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	for _, tc := range []struct {
		txHash string
		status int
	}{
		{"", 200},
		{"0x" + strings.Repeat("ab", 32), 200},
		{"5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW", 200},
		{"0x1234", 400},
		{"not a hash", 400},
	} {
		body := map[string]any{"clientSecret": secret}
		if tc.txHash != "" {
			body["txHash"] = tc.txHash
		}
		r := b.do("PUT", "/v1/sessions/"+id+"/check", body)
		if r.Status != tc.status {
			t.Errorf("check txHash %q: %d %s", tc.txHash, r.Status, r.Raw)
			continue
		}
		if tc.status == 400 {
			if typ, code, param := errorOf(t, r); typ != "validation_error" || code != "invalid_tx_hash" || param != "txHash" {
				t.Errorf("check txHash %q: %s", tc.txHash, r.Raw)
			}
		} else if s := r.Body["session"].(map[string]any); s["sessionId"] != id || s["clientSecret"] != nil {
			t.Errorf("check response: %s", r.Raw)
		}
	}
}

func TestConcurrentReceivers(t *testing.T) {
	b := setup(t)
	const n = 50
	type sess struct{ id, secret string }
	sessions := make([]sess, n)
	for i := range sessions {
		sessions[i].id, sessions[i].secret = b.create(b.key)
	}
	addrs := make([]string, n)
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			r := b.do("POST", "/v1/sessions/"+s.id+"/paymentMethods", map[string]any{"clientSecret": s.secret, "paymentMethod": map[string]any{"type": "evm"}})
			if r.Status == 200 {
				addrs[i], _ = r.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)
			} else {
				t.Errorf("session %d: %d %s", i, r.Status, r.Raw)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, a := range addrs {
		if a == "" || seen[a] {
			t.Errorf("session %d: receiver %q is empty or reused", i, a)
		}
		seen[a] = true
	}

	// Many concurrent calls on one session allocate one receiver.
	id, secret := b.create(b.key)
	got := make([]string, 10)
	for i := range got {
		wg.Go(func() {
			r := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
			if r.Status == 200 {
				got[i], _ = r.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)
			}
		})
	}
	wg.Wait()
	for i, a := range got {
		if a == "" || a != got[0] {
			t.Errorf("concurrent call %d on one session got receiver %q, want %q", i, a, got[0])
		}
	}
	var count, distinctIdx int
	if err := b.db.PG.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT derivation_index) FROM receivers").Scan(&count, &distinctIdx); err != nil {
		t.Fatal(err)
	}
	if count != n+1 || distinctIdx != n+1 {
		t.Errorf("receivers = %d with %d distinct indexes, want %d", count, distinctIdx, n+1)
	}
	if m, err := b.mirror.Flush(context.Background()); err != nil || m != n+1 {
		t.Errorf("mirrored %d, %v; want %d", m, err, n+1)
	}
}

func TestRoutingAndCORS(t *testing.T) {
	b := setup(t)
	id, _ := b.create(b.key)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"PUT", "/v1/sessions", 405, "method_not_allowed"}, // GET lists them (lists.go)
		{"DELETE", "/v1/sessions/" + id, 405, "method_not_allowed"},
		{"GET", "/v1/sessions/" + id + "/check", 405, "method_not_allowed"},
		{"GET", "/v2/anything", 404, "not_found"},
		// Metrics have their own listener (api.metrics_listen), never the
		// public one.
		{"GET", "/metrics", 404, "not_found"},
	} {
		r := b.do(tc.method, tc.path, nil)
		if r.Status != tc.status {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, r.Status, r.Raw)
			continue
		}
		if _, code, _ := errorOf(t, r); code != tc.code {
			t.Errorf("%s %s: code %s, want %s", tc.method, tc.path, code, tc.code)
		}
	}
	for _, path := range []string{"/v1/sessions/" + id, "/v1/sessions/" + id + "/paymentMethods", "/v1/sessions/" + id + "/check"} {
		r := b.do("OPTIONS", path, nil, "Origin", "https://shop.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,x-sdk-version")
		h := r.Header
		if r.Status != 204 || h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "x-sdk-version") {
			t.Errorf("preflight %s: %d %v", path, r.Status, h)
		}
	}
	if h := b.do("GET", "/v1/sessions/"+id, nil, "Origin", "https://shop.example").Header; h.Get("Access-Control-Allow-Origin") != "*" {
		t.Error("public GET lacks CORS header")
	}
	if h := b.do("POST", "/v1/sessions", validCreate(), append(b.bearer(b.key), "Origin", "https://evil.example")...).Header; h.Get("Access-Control-Allow-Origin") != "" {
		t.Error("API-key endpoint allows cross-origin calls")
	}
	if r := b.do("GET", "/healthz", nil); r.Status != 200 {
		t.Errorf("healthz: %d", r.Status)
	}
	if r := b.do("GET", "/readyz", nil); r.Status != 200 || r.Body["postgres"] != "ok" || r.Body["clickhouse"] != "ok" {
		t.Errorf("readyz: %d %s", r.Status, r.Raw)
	}
	b.db.PG.Close()
	if r := b.do("GET", "/readyz", nil); r.Status != 503 || r.Body["postgres"] != "unavailable" {
		t.Errorf("readyz with postgres closed: %d %s", r.Status, r.Raw)
	}
}

func TestObservability(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	b.do("GET", "/v1/sessions/"+id+"?clientSecret="+secret, nil)
	b.do("POST", "/v1/sessions", validCreate())
	r := b.do("GET", "/v1/sessions/"+id, nil, "X-Request-Id", "req-abc_123")
	if r.Header.Get("X-Request-Id") != "req-abc_123" {
		t.Errorf("request id not echoed: %q", r.Header.Get("X-Request-Id"))
	}
	if r := b.do("GET", "/v1/sessions/"+id, nil, "X-Request-Id", "bad id!"); len(r.Header.Get("X-Request-Id")) != 16 {
		t.Errorf("invalid request id not replaced: %q", r.Header.Get("X-Request-Id"))
	}

	families, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := []string{}
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			if c := m.GetCounter(); c != nil {
				found[key] = c.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				found[key] = float64(h.GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		`settle_api_requests_total{method=POST,route=POST /v1/sessions,status=201}`:                     1,
		`settle_api_requests_total{method=POST,route=POST /v1/sessions,status=401}`:                     1,
		`settle_api_request_duration_seconds{method=GET,route=GET /v1/sessions/{id},status=200}`:        3,
		`settle_api_requests_total{method=POST,route=POST /v1/sessions/{id}/paymentMethods,status=200}`: 1,
		`settle_api_sessions_created_total{outcome=created}`:                                            1,
		`settle_api_sessions_created_total{outcome=unauthenticated}`:                                    1,
		`settle_api_receivers_allocated_total{family=evm}`:                                              1,
	} {
		if found[key] != want {
			t.Errorf("%s = %v, want %v", key, found[key], want)
		}
	}

	logs := b.logs.String()
	if !strings.Contains(logs, `"request_id":"req-abc_123"`) {
		t.Error("logs lack the request id")
	}
	for name, secretValue := range map[string]string{"client secret": secret, "api key": b.key} {
		if strings.Contains(logs, secretValue) {
			t.Errorf("logs contain the %s", name)
		}
	}
}
