package api

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// The hosted checkout page: server-rendered, every asset embedded, no
// inline script or style (the Content-Security-Policy forbids both), and
// usable without JavaScript (picking a token is a form post; the script
// adds copy buttons, the countdown, live status and the redirect).
//
//go:embed checkout/*
var checkoutFS embed.FS

var checkoutTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"mmss": func(secs int64) string {
		if secs < 0 {
			secs = 0
		}
		return fmt.Sprintf("%d:%02d", secs/60, secs%60)
	},
}).ParseFS(checkoutFS, "checkout/page.html"))

// checkoutCSP allows only this origin's script, style and requests. Images
// may also come over https (the merchant's logo and item images, checked to
// be https at create time); the QR code is inline SVG.
const checkoutCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Page states. "open" covers choosing a token and paying it: the server
// cannot tell them apart, and the status poll reloads only on a change.
const (
	stateOpen       = "open"
	stateProcessing = "processing"
	stateCompleted  = "completed"
	stateBounced    = "bounced"
	stateExpired    = "expired"
)

func checkoutState(st session.Status) string {
	switch st {
	case session.Processing:
		return stateProcessing
	case session.Succeeded:
		return stateCompleted
	case session.Bounced:
		return stateBounced
	case session.Expired:
		return stateExpired
	default:
		return stateOpen
	}
}

// checkoutRef is how a page names its session: a payment id, or a
// session id with its client secret. Either is a bearer credential for
// paying this one session, nothing more.
type checkoutRef struct {
	PaymentID, SessionID, Secret string
}

func (c checkoutRef) query() url.Values {
	v := url.Values{}
	if c.PaymentID != "" {
		v.Set("id", c.PaymentID)
	} else {
		v.Set("session", c.SessionID)
		v.Set("secret", c.Secret)
	}
	return v
}

var errCheckoutNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "checkout_not_found", Message: "No such payment."}

// checkoutSession loads the session a checkout request names (in the query
// or, for the form post, the body).
func (s *Server) checkoutSession(r *http.Request) (*session.Session, checkoutRef, error) {
	id, sid, secret := r.FormValue("id"), r.FormValue("session"), r.FormValue("secret")
	var (
		ss  *session.Session
		err error
		ref checkoutRef
	)
	switch {
	case id != "":
		if !paymentIDPattern.MatchString(id) {
			return nil, ref, errCheckoutNotFound
		}
		ss, err = s.cfg.Store.GetPayment(r.Context(), id)
		ref.PaymentID = id
	case sid != "" && secret != "":
		if !sessionIDPattern.MatchString(sid) {
			return nil, ref, errCheckoutNotFound
		}
		ss, err = s.cfg.Store.GetSession(r.Context(), sid)
		if err == nil && !secretMatches(secret, ss.ClientSecret) {
			return nil, ref, errCheckoutNotFound
		}
		ref.SessionID, ref.Secret = sid, secret
	default:
		return nil, ref, errCheckoutNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, ref, errCheckoutNotFound
	}
	return ss, ref, err
}

// payOption is one chain and token the payer may pay with.
type payOption struct {
	ChainID   uint64
	ChainName string
	Token     chain.Token
	// TokenOut is the token's address as shown (EIP-55).
	TokenOut string
}

func (o payOption) Value() string { return strconv.FormatUint(o.ChainID, 10) + ":" + o.TokenOut }

// payOptions lists what a payer can pay with: every accepted token of every
// indexed EVM chain (on a chain nobody indexes a payment would never be
// seen). A payment's preferred tokens come first, then the tokens of its
// preferred chains, each in the merchant's order; then the destination's
// own chain and token; then the rest by chain id.
func (s *Server) payOptions(ss *session.Session) []payOption {
	var out []payOption
	for _, c := range s.cfg.Chains.ByFamily(chain.FamilyEVM) {
		if !c.Indexed {
			continue
		}
		for _, t := range c.Tokens {
			out = append(out, payOption{ChainID: c.ID, ChainName: c.Name, Token: t, TokenOut: addressOut(true, t.Address)})
		}
	}
	rank := func(o payOption) int {
		if p := ss.Payment; p != nil {
			for i, t := range p.Checkout.PreferredTokens {
				if t.Chain == o.ChainID && strings.EqualFold(t.Address, o.Token.Address) {
					return i
				}
			}
			if i := slices.Index(p.Checkout.PreferredChains, o.ChainID); i >= 0 {
				return 1000 + i
			}
		}
		d := ss.Destination
		switch {
		case o.ChainID == d.ChainID && strings.EqualFold(o.Token.Address, d.TokenAddress):
			return 2000
		case o.ChainID == d.ChainID:
			return 2001
		}
		return 3000
	}
	slices.SortStableFunc(out, func(a, b payOption) int { return rank(a) - rank(b) })
	return out
}

// payAmount is what the payer must send in token t for the session to be
// paid in full: the requested amount converted 1:1 between stablecoins,
// rounded up to t's precision (a payer who pays the page's figure is never
// short by dust). nil for an open amount.
func (s *Server) payAmount(ss *session.Session, t chain.Token) *big.Int {
	d := ss.Destination
	if d.AmountRaw == nil {
		return nil
	}
	c, ok := s.cfg.Chains.Chain(d.ChainID)
	if !ok {
		return nil
	}
	dt, ok := c.Token(d.TokenAddress)
	if !ok {
		return nil
	}
	return convertCeil(d.AmountRaw, dt.Decimals, t.Decimals)
}

func convertCeil(v *big.Int, from, to uint8) *big.Int {
	switch {
	case from == to:
		return new(big.Int).Set(v)
	case to > from:
		return new(big.Int).Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(to-from)), nil))
	default:
		f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(from-to)), nil)
		q, r := new(big.Int).QuoRem(v, f, new(big.Int))
		if r.Sign() > 0 {
			q.Add(q, big.NewInt(1))
		}
		return q
	}
}

// eip681 is the payment request a wallet scans: an ERC-20 transfer of
// amount (smallest units; omitted for an open amount) of token on chain to
// receiver.
func eip681(token string, chainID uint64, receiver string, amount *big.Int) string {
	u := "ethereum:" + token + "@" + strconv.FormatUint(chainID, 10) + "/transfer?address=" + receiver
	if amount != nil {
		u += "&uint256=" + amount.String()
	}
	return u
}

type checkoutPay struct {
	Option   payOption
	Receiver string
	// Amount is the decimal figure to send; "" for an open amount.
	Amount string
	// URI is the EIP-681 request; built here from checked hex and
	// numbers only, so it is safe as a link (html/template would
	// otherwise refuse the ethereum: scheme).
	URI template.URL
	QR  template.HTML
}

type checkoutPage struct {
	State string
	Ref   checkoutRef
	Query string // ref as a query string, for the poll
	// Self is this page without a chosen token.
	Self    template.URL
	Title   string
	Verb    string
	Logo    string
	Items   []session.Item
	Amount  string // the destination amount, "" for an open one
	Symbol  string
	Options []payOption
	// Fiat offers the onramp (a provider is configured and the payment's
	// paymentOptions allow it).
	Fiat        bool
	Pay         *checkoutPay
	ExpiresAt   int64
	SecondsLeft int64
	Redirect    string
	SourceTx    string
	RefundTx    string
	Error       string
}

func (s *Server) checkoutHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", checkoutCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	// The page's URL is a credential (a session's secret or a payment id):
	// it must not leak to the merchant's logo host or the redirect target.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

// checkoutPageHandler serves GET /checkout.
func (s *Server) checkoutPageHandler(w http.ResponseWriter, r *http.Request) error {
	s.checkoutHeaders(w)
	ss, ref, err := s.checkoutSession(r)
	if err != nil {
		return s.checkoutError(w, r, err)
	}
	now := s.cfg.Now()
	st := ss.StatusAt(now)
	p := checkoutPage{
		State:     checkoutState(st),
		Ref:       ref,
		Query:     ref.query().Encode(),
		Self:      template.URL("/checkout?" + ref.query().Encode()), //nolint:gosec // our own path and an encoded query
		Title:     ss.Display.Title,
		Verb:      ss.Display.Verb,
		Amount:    usdValue(ss.Destination.AmountUnits),
		Symbol:    ss.Destination.TokenSymbol,
		ExpiresAt: ss.ExpiresAt.Unix(),
	}
	p.SecondsLeft = p.ExpiresAt - now.Unix()
	if c := ss.Payment; c != nil {
		p.Title, p.Logo, p.Items, p.Redirect = c.Checkout.Intent, c.Checkout.OrgLogo, c.Checkout.Items, c.Checkout.RedirectURI
	}
	if pm := ss.PaymentMethod; pm != nil && pm.Source != nil {
		p.SourceTx = pm.Source.TxHash
	}
	if st == session.Bounced && ss.Destination.Delivery != nil {
		p.RefundTx = ss.Destination.Delivery.TxHash
	}
	if p.State == stateOpen {
		p.Options = s.payOptions(ss)
		p.Fiat = s.fiatOffered(ss)
		if pick := r.FormValue("pay"); pick != "" && ss.PaymentMethod != nil && ss.PaymentMethod.Type == "evm" {
			for _, o := range p.Options {
				if o.Value() == pick {
					p.Pay = s.checkoutPay(ss, o)
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := checkoutTmpl.Execute(&buf, p); err != nil {
		return fmt.Errorf("rendering checkout page: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (s *Server) checkoutPay(ss *session.Session, o payOption) *checkoutPay {
	receiver := addressOut(true, ss.PaymentMethod.ReceiverAddress)
	amt := s.payAmount(ss, o.Token)
	uri := eip681(o.TokenOut, o.ChainID, receiver, amt)
	p := &checkoutPay{Option: o, Receiver: receiver, URI: template.URL(uri)} //nolint:gosec // see URI
	if amt != nil {
		p.Amount = usdValue(chain.FormatUnits(amt, o.Token.Decimals))
	}
	if svg, err := qrSVG(uri); err == nil {
		p.QR = svg
	} else {
		s.logger.Warn("rendering the checkout QR code failed", "err", err)
	}
	return p
}

// checkoutSelect serves the token picker's form post: it sets the evm
// payment method (one receiver per session, however often it is posted)
// and sends the payer to the page with the pay step for that token.
func (s *Server) checkoutSelect(w http.ResponseWriter, r *http.Request) error {
	s.checkoutHeaders(w)
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return s.checkoutError(w, r, validationf("", "invalid_form", "The form could not be read."))
	}
	ss, ref, err := s.checkoutSession(r)
	if err != nil {
		return s.checkoutError(w, r, err)
	}
	pick := r.PostForm.Get("pay")
	if !slices.ContainsFunc(s.payOptions(ss), func(o payOption) bool { return o.Value() == pick }) {
		return s.checkoutError(w, r, validationf("pay", "invalid_value", "That chain and token cannot be used to pay."))
	}
	if _, err := s.setEVMMethod(r.Context(), ss); err != nil {
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusConflict {
			return s.checkoutError(w, r, err)
		}
		// Paid or over in between: the page shows what happened.
	}
	q := ref.query()
	q.Set("pay", pick)
	http.Redirect(w, r, "/checkout?"+q.Encode(), http.StatusSeeOther)
	return nil
}

// fiatOffered reports whether the page offers the onramp: a provider is
// configured and the merchant's paymentOptions, if given, name it
// (RampNetwork, the onramp option of the Payments API).
func (s *Server) fiatOffered(ss *session.Session) bool {
	if s.cfg.Fiat == nil {
		return false
	}
	if ss.Payment == nil || ss.Payment.Checkout.PaymentOptions == nil {
		return true
	}
	return slices.Contains(ss.Payment.Checkout.PaymentOptions, "RampNetwork")
}

// checkoutFiat serves the onramp button: it sets the fiat payment method
// and sends the payer to the provider's page, which brings them back here.
func (s *Server) checkoutFiat(w http.ResponseWriter, r *http.Request) error {
	s.checkoutHeaders(w)
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return s.checkoutError(w, r, validationf("", "invalid_form", "The form could not be read."))
	}
	ss, ref, err := s.checkoutSession(r)
	if err != nil {
		return s.checkoutError(w, r, err)
	}
	if !s.fiatOffered(ss) {
		return s.checkoutError(w, r, validationf("fiat", "payment_method_not_enabled", "Paying by bank or card is not available for this payment."))
	}
	back := s.publicURL + "/checkout?" + ref.query().Encode()
	_, hosted, err := s.startFiat(r.Context(), ss, r.PostForm.Get("fiatMethod"), back)
	if err != nil {
		return s.checkoutError(w, r, err)
	}
	http.Redirect(w, r, hosted, http.StatusSeeOther)
	return nil
}

// checkoutStatus serves the page's poll: its state, and where to go once
// it is completed.
func (s *Server) checkoutStatus(w http.ResponseWriter, r *http.Request) error {
	s.checkoutHeaders(w)
	ss, _, err := s.checkoutSession(r)
	if err != nil {
		return err
	}
	out := map[string]any{"state": checkoutState(ss.StatusAt(s.cfg.Now()))}
	if pm := ss.PaymentMethod; pm != nil && pm.ReceiverAddress != "" {
		// The page shows it to whoever holds its URL; tools (settle dev
		// pay) read it here.
		out["receiverAddress"] = addressOut(true, pm.ReceiverAddress)
	}
	if ss.Payment != nil && ss.Payment.Checkout.RedirectURI != "" {
		out["redirectUri"] = ss.Payment.Checkout.RedirectURI
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkoutError renders an error as a page (a payer reads it, not a
// program); a 5xx's detail stays in the log.
func (s *Server) checkoutError(w http.ResponseWriter, r *http.Request, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		s.logger.ErrorContext(r.Context(), "checkout request failed", "err", err)
		e = errInternal
	}
	var buf bytes.Buffer
	if terr := checkoutTmpl.Execute(&buf, checkoutPage{State: "error", Title: "Checkout", Error: e.Message}); terr != nil {
		return terr
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(e.Status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// checkoutAsset serves the page's embedded stylesheet and script.
func (s *Server) checkoutAsset(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	types := map[string]string{"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
	ct, ok := types[name]
	if !ok {
		return &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "not_found", Message: "No such asset."}
	}
	b, err := checkoutFS.ReadFile("checkout/" + name)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
	return nil
}
