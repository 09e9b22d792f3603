// Package sandbox is a pretend fiat onramp for `settle dev` and tests. Its
// hosted page takes a make-believe local-currency payment, then sends the
// stablecoin from a dev onramp wallet to the session's receiver on a dev
// chain, so the session runs the normal pipeline (indexer, reconciler,
// delivery). No money and no real provider is involved; it must never be
// configured with a wallet that holds anything of value.
package sandbox

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/chain"
)

//go:embed page.html
var pageFS embed.FS

var page = template.Must(template.ParseFS(pageFS, "page.html"))

// Path is where the hosted page is served.
const Path = "/sandbox/onramp"

// Config configures the sandbox.
type Config struct {
	// PublicURL is the base URL the page is reached at (the API's).
	PublicURL string
	// ChainID is the dev chain the onramp pays on; it must be indexed.
	ChainID uint64
	// Client is that chain's node.
	Client *ethclient.Client
	// Token is the stablecoin it pays with; it must be accepted there.
	Token chain.Token
	// Wallet signs the onramp's transfers and holds the test tokens.
	Wallet *ecdsa.PrivateKey
	Logger *slog.Logger
}

// Provider is the sandbox onramp: an api.FiatProvider and the handler of
// its hosted page.
type Provider struct {
	cfg    Config
	secret []byte
	logger *slog.Logger

	mu   sync.Mutex
	sent map[string]string // session id → tx hash: one transfer per session
	// sending serialises transfers, which share the wallet's nonces.
	sending sync.Mutex
}

// New checks cfg and returns a Provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Client == nil || cfg.Wallet == nil || cfg.ChainID == 0 || cfg.Token.Address == "" || cfg.PublicURL == "" {
		return nil, errors.New("sandbox: PublicURL, ChainID, Client, Token and Wallet are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Orders travel in the page's URL, signed with a key derived from the
	// wallet's, so they survive a restart and cannot be forged to pay
	// another address.
	mac := hmac.New(sha256.New, crypto.FromECDSA(cfg.Wallet))
	mac.Write([]byte("settle sandbox onramp orders"))
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &Provider{cfg: cfg, secret: mac.Sum(nil), logger: logger.With("component", "sandbox_onramp"), sent: map[string]string{}}, nil
}

// Address is the onramp wallet's address (fund it with the test token).
func (p *Provider) Address() common.Address { return crypto.PubkeyToAddress(p.cfg.Wallet.PublicKey) }

type order struct {
	Session  string `json:"s"`
	Method   string `json:"m,omitempty"`
	Receiver string `json:"r"`
	// Amount in the token's smallest units; "" lets the payer choose.
	Amount string `json:"a,omitempty"`
	Return string `json:"u,omitempty"`
}

// Start implements api.FiatProvider: the same order always gives the same
// URL.
func (p *Provider) Start(_ context.Context, o api.FiatOrder) (string, error) {
	var ok bool
	for _, c := range o.Chains {
		if c.ID == p.cfg.ChainID {
			_, ok = c.Token(p.cfg.Token.Address)
		}
	}
	if !ok {
		return "", fmt.Errorf("sandbox onramp pays %s on chain %d, which settle does not index or accept", p.cfg.Token.Symbol, p.cfg.ChainID)
	}
	ord := order{Session: o.SessionID, Method: o.Method, Receiver: o.Receiver, Return: o.ReturnURL}
	if o.AmountUSD != "" {
		amt, err := amountIn(o.AmountUSD, p.cfg.Token.Decimals)
		if err != nil {
			return "", err
		}
		ord.Amount = amt.String()
	}
	j, err := json.Marshal(ord)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString(j)
	return p.cfg.PublicURL + Path + "?o=" + enc + "." + base64.RawURLEncoding.EncodeToString(p.sign(enc)), nil
}

// amountIn is a USD decimal in the token's units, rounded up so the
// session is paid in full.
func amountIn(usd string, decimals uint8) (*big.Int, error) {
	whole, frac, _ := strings.Cut(usd, ".")
	if len(frac) > int(decimals) {
		// More precision than the token: round up at its last digit.
		v, err := chain.ParseUnits(whole+"."+frac[:decimals], decimals)
		if err != nil {
			return nil, err
		}
		if strings.Trim(frac[decimals:], "0") != "" {
			v.Add(v, big.NewInt(1))
		}
		return v, nil
	}
	return chain.ParseUnits(usd, decimals)
}

func (p *Provider) sign(s string) []byte {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func (p *Provider) decode(raw string) (*order, error) {
	enc, sig, ok := strings.Cut(raw, ".")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, p.sign(enc)) {
		return nil, errors.New("this onramp link is not valid")
	}
	j, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, errors.New("this onramp link is not valid")
	}
	var o order
	if err := json.Unmarshal(j, &o); err != nil {
		return nil, errors.New("this onramp link is not valid")
	}
	return &o, nil
}

// currencies are the pretend local currencies of each method, with a
// made-up rate per USD.
var currencies = map[string]struct {
	Code, Sign string
	Rate       float64
}{
	"interac":   {"CAD", "CA$", 1.37},
	"sepa":      {"EUR", "€", 0.92},
	"ach":       {"USD", "$", 1},
	"apple_pay": {"USD", "$", 1},
	"":          {"USD", "$", 1},
}

type view struct {
	Order    string
	Method   string
	Local    string // e.g. "CA$13.70"
	Amount   string // in the token, "" for open
	Symbol   string
	Receiver string
	TxHash   string
	Return   template.URL
	Error    string
	Open     bool
}

// ServeHTTP serves the hosted page (GET) and its pretend payment (POST).
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		p.render(w, http.StatusBadRequest, view{Error: "The form could not be read."})
		return
	}
	raw := r.FormValue("o")
	o, err := p.decode(raw)
	if err != nil {
		p.render(w, http.StatusNotFound, view{Error: err.Error()})
		return
	}
	v := p.viewOf(raw, o)
	switch r.Method {
	case http.MethodGet:
		p.mu.Lock()
		v.TxHash = p.sent[o.Session]
		p.mu.Unlock()
		p.render(w, http.StatusOK, v)
	case http.MethodPost:
		amount := o.Amount
		if amount == "" {
			amt, err := amountIn(r.PostForm.Get("amount"), p.cfg.Token.Decimals)
			if err != nil || amt.Sign() <= 0 {
				v.Error = "Enter an amount such as 10.00."
				p.render(w, http.StatusBadRequest, v)
				return
			}
			amount = amt.String()
		}
		tx, err := p.pay(r.Context(), o, amount)
		if err != nil {
			p.logger.ErrorContext(r.Context(), "sandbox onramp transfer failed", "session_id", o.Session, "err", err)
			v.Error = "The onramp could not send the payment: " + err.Error()
			p.render(w, http.StatusBadGateway, v)
			return
		}
		v.TxHash = tx
		p.render(w, http.StatusOK, v)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (p *Provider) viewOf(raw string, o *order) view {
	v := view{Order: raw, Method: o.Method, Symbol: p.cfg.Token.Symbol, Receiver: o.Receiver, Open: o.Amount == ""}
	if v.Method == "" {
		v.Method = "card"
	}
	if u, err := url.Parse(o.Return); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		v.Return = template.URL(o.Return) //nolint:gosec // signed by us, and http(s)
	}
	if o.Amount != "" {
		amt, _ := new(big.Int).SetString(o.Amount, 10)
		v.Amount = chain.FormatUnits(amt, p.cfg.Token.Decimals)
		c := currencies[o.Method]
		usd, _ := new(big.Float).SetString(v.Amount)
		local, _ := new(big.Float).Mul(usd, big.NewFloat(c.Rate)).Float64()
		v.Local = fmt.Sprintf("%s%.2f %s", c.Sign, local, c.Code)
	}
	return v
}

// pay sends the order's stablecoin once per session.
func (p *Provider) pay(ctx context.Context, o *order, amount string) (string, error) {
	p.sending.Lock()
	defer p.sending.Unlock()
	p.mu.Lock()
	done := p.sent[o.Session]
	p.mu.Unlock()
	if done != "" {
		return done, nil
	}
	amt, ok := new(big.Int).SetString(amount, 10)
	if !ok || !common.IsHexAddress(o.Receiver) {
		return "", errors.New("bad order")
	}
	hash, err := Transfer(ctx, p.cfg.Client, p.cfg.Wallet, common.HexToAddress(p.cfg.Token.Address), common.HexToAddress(o.Receiver), amt)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	p.sent[o.Session] = hash.Hex()
	p.mu.Unlock()
	p.logger.InfoContext(ctx, "sandbox onramp paid", "session_id", o.Session, "tx", hash.Hex(), "amount", amount)
	return hash.Hex(), nil
}

func (p *Provider) render(w http.ResponseWriter, status int, v view) {
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		http.Error(w, "rendering page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Transfer sends an ERC-20 transfer signed by key and waits up to 30 s for
// it to be mined successfully. It is for dev chains: fees are twice the
// base fee plus 1 gwei, with no replacement.
func Transfer(ctx context.Context, c *ethclient.Client, key *ecdsa.PrivateKey, token, to common.Address, amount *big.Int) (common.Hash, error) {
	from := crypto.PubkeyToAddress(key.PublicKey)
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
		return common.Hash{}, fmt.Errorf("estimating gas (does %s hold the token?): %w", from.Hex(), err)
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
			if r.Status != types.ReceiptStatusSuccessful {
				return tx.Hash(), errors.New("transfer reverted")
			}
			return tx.Hash(), nil
		}
		select {
		case <-ctx.Done():
			return tx.Hash(), ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return tx.Hash(), errors.New("transfer not mined after 30s")
}
