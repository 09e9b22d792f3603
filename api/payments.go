package api

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gagliardetto/solana-go"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// Limits on the Payments API's display fields.
const (
	maxIntentLen     = 200
	maxItems         = 50
	maxItemNameLen   = 200
	maxItemTextLen   = 500
	maxExternalIDLen = 255
	maxPreferred     = 50
)

// PaymentOptions the checkout page knows. Daimo's names, so requests
// written for its API validate here. Only those whose method exists are
// shown: wallets on the configured EVM chains always, RampNetwork as the
// fiat onramp when a provider is configured; the others are accepted and
// have no effect until their method exists.
var knownPaymentOptions = []string{"Daimo", "Coinbase", "Binance", "Solana", "RampNetwork", "ExternalChains"}

var paymentIDPattern = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{32,44}$`)

var errPaymentNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "payment_not_found", Message: "No such payment.", Param: "id"}

// newPaymentID returns 32 random bytes in base58 (Bitcoin's alphabet,
// which is Solana's: solana-go encodes it), 43 or 44 characters like the
// seed's example ids.
func newPaymentID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return solana.PublicKeyFromBytes(b[:]).String()
}

// merchantFromPaymentsKey authenticates the Payments API's Api-Key header.
func (s *Server) merchantFromPaymentsKey(r *http.Request) (string, error) {
	if id, ok := r.Context().Value(merchantKey{}).(string); ok {
		return id, nil
	}
	key := r.Header.Get("Api-Key")
	if key == "" {
		return "", authError("missing_api_key", "Send your API key in the Api-Key header.")
	}
	id, err := s.cfg.Store.MerchantByAPIKey(r.Context(), key)
	if errors.Is(err, store.ErrNotFound) {
		return "", authError("invalid_api_key", "Invalid API key.")
	}
	return id, err
}

type createPaymentRequest struct {
	Display       *paymentDisplayRequest     `json:"display"`
	Destination   *paymentDestinationRequest `json:"destination"`
	ExternalID    *string                    `json:"externalId"`
	Metadata      map[string]json.RawMessage `json:"metadata"`
	RefundAddress *string                    `json:"refundAddress"`
}

type paymentDisplayRequest struct {
	Intent          string            `json:"intent"`
	OrgLogo         string            `json:"orgLogo"`
	Items           []session.Item    `json:"items"`
	PreferredChains []uint64          `json:"preferredChains"`
	PreferredTokens []tokenRefRequest `json:"preferredTokens"`
	PaymentOptions  []string          `json:"paymentOptions"`
	RedirectURI     string            `json:"redirectUri"`
}

type tokenRefRequest struct {
	Chain   *uint64 `json:"chain"`
	Address string  `json:"address"`
}

type paymentDestinationRequest struct {
	DestinationAddress string  `json:"destinationAddress"`
	ChainID            *uint64 `json:"chainId"`
	TokenAddress       string  `json:"tokenAddress"`
	AmountUnits        *string `json:"amountUnits"`
	Calldata           *string `json:"calldata"`
}

// paymentParams renames the Sessions API's destination params, whose
// checks the Payments API shares, to the Payments API's field names.
var paymentParams = map[string]string{"destination.address": "destination.destinationAddress"}

func (s *Server) createPayment(w http.ResponseWriter, r *http.Request) (err error) {
	outcome := "error"
	defer func() {
		var e *Error
		if errors.As(err, &e) {
			switch e.Status {
			case http.StatusUnauthorized:
				outcome = "unauthenticated"
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
				outcome = "invalid"
			}
		}
		s.metrics.paymentsCreated.WithLabelValues(outcome).Inc()
	}()
	merchantID, err := s.merchantFromPaymentsKey(r)
	if err != nil {
		return err
	}
	var req createPaymentRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ss, decimals, err := s.validatePayment(r, &req)
	if err != nil {
		return err
	}
	ss.MerchantID = merchantID
	out, created, err := s.cfg.Store.CreatePayment(r.Context(), ss, decimals)
	if err != nil {
		return err
	}
	outcome = "existing"
	if created {
		outcome = "created"
		s.logger.InfoContext(r.Context(), "payment created", "payment_id", out.Payment.ID, "session_id", out.ID, "merchant_id", merchantID)
	}
	// 200 both times: a repeated create is the same answer, not a new
	// resource.
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      out.Payment.ID,
		"url":     s.CheckoutURL(out.Payment.ID),
		"payment": paymentView(out, s.cfg.Now()),
	})
	return nil
}

// CheckoutURL is the hosted page a payment's payer pays on.
func (s *Server) CheckoutURL(paymentID string) string {
	return s.publicURL + "/checkout?id=" + url.QueryEscape(paymentID)
}

func (s *Server) validatePayment(r *http.Request, req *createPaymentRequest) (*session.Session, uint8, error) {
	if req.Display == nil {
		return nil, 0, validationf("display", "missing_field", "display is required.")
	}
	checkout, err := s.validateCheckout(req.Display)
	if err != nil {
		return nil, 0, err
	}
	d := req.Destination
	if d == nil {
		return nil, 0, validationf("destination", "missing_field", "destination is required.")
	}
	if d.AmountUnits == nil {
		return nil, 0, validationf("destination.amountUnits", "missing_field", "destination.amountUnits is required: a payment is for an exact amount.")
	}
	if strings.EqualFold(d.TokenAddress, zeroAddress) {
		return nil, 0, validationf("destination.tokenAddress", "native_token_not_supported",
			"Native-token destinations are not supported yet (settle has no price source to convert a stablecoin deposit); use a token address.")
	}
	var ext string
	if req.ExternalID != nil {
		ext = *req.ExternalID
		switch {
		case ext == "":
			return nil, 0, validationf("externalId", "invalid_value", "externalId must not be empty; omit it instead.")
		case len(ext) > maxExternalIDLen || !utf8.ValidString(ext) || strings.ContainsFunc(ext, func(c rune) bool { return c < 0x20 || c == 0x7f }):
			return nil, 0, validationf("externalId", "invalid_value", "externalId must be at most %d bytes of text without control characters.", maxExternalIDLen)
		}
	}
	metadata, err := stringMetadata(req.Metadata)
	if err != nil {
		return nil, 0, err
	}
	sreq := &createSessionRequest{
		Destination: &destinationRequest{Type: "evm", Address: d.DestinationAddress, ChainID: d.ChainID,
			TokenAddress: d.TokenAddress, AmountUnits: d.AmountUnits, Calldata: d.Calldata},
		Display:       &displayRequest{Title: checkout.Intent, Verb: "Pay"},
		Metadata:      metadata,
		RefundAddress: req.RefundAddress,
	}
	v, err := s.validateCreate(r.Context(), sreq)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			if p, ok := paymentParams[e.Param]; ok {
				renamed := *e
				renamed.Param, renamed.Message = p, strings.ReplaceAll(e.Message, e.Param, p)
				return nil, 0, &renamed
			}
		}
		return nil, 0, err
	}
	now := s.cfg.Now().Truncate(1e9)
	return &session.Session{
		ID:            randomHex(16),
		Status:        session.RequiresPaymentMethod,
		Destination:   v.dest,
		Display:       v.display,
		Metadata:      v.metadata,
		RefundAddress: v.refundAddress,
		ClientSecret:  randomHex(32),
		CreatedAt:     now,
		ExpiresAt:     now.Add(s.cfg.SessionTTL),
		Payment:       &session.Payment{ID: newPaymentID(), ExternalID: ext, Checkout: *checkout},
	}, v.decimals, nil
}

func (s *Server) validateCheckout(d *paymentDisplayRequest) (*session.Checkout, error) {
	switch {
	case strings.TrimSpace(d.Intent) == "":
		return nil, validationf("display.intent", "missing_field", "display.intent is required (e.g. \"Pay\", \"Deposit\").")
	case utf8.RuneCountInString(d.Intent) > maxIntentLen:
		return nil, validationf("display.intent", "too_long", "display.intent is longer than %d characters.", maxIntentLen)
	}
	c := &session.Checkout{Intent: d.Intent, PaymentOptions: d.PaymentOptions}
	if d.OrgLogo != "" {
		if err := checkURL("display.orgLogo", d.OrgLogo, true); err != nil {
			return nil, err
		}
		c.OrgLogo = d.OrgLogo
	}
	if d.RedirectURI != "" {
		if err := checkURL("display.redirectUri", d.RedirectURI, false); err != nil {
			return nil, err
		}
		c.RedirectURI = d.RedirectURI
	}
	if len(d.Items) > maxItems {
		return nil, validationf("display.items", "too_many_items", "display.items has %d items; at most %d are allowed.", len(d.Items), maxItems)
	}
	for i, it := range d.Items {
		p := fmt.Sprintf("display.items[%d]", i)
		switch {
		case strings.TrimSpace(it.Name) == "":
			return nil, validationf(p+".name", "missing_field", "%s.name is required.", p)
		case utf8.RuneCountInString(it.Name) > maxItemNameLen:
			return nil, validationf(p+".name", "too_long", "%s.name is longer than %d characters.", p, maxItemNameLen)
		}
		for field, v := range map[string]string{"description": it.Description, "price": it.Price, "priceDetails": it.PriceDetails} {
			if utf8.RuneCountInString(v) > maxItemTextLen {
				return nil, validationf(p+"."+field, "too_long", "%s.%s is longer than %d characters.", p, field, maxItemTextLen)
			}
		}
		if it.Image != "" {
			if err := checkURL(p+".image", it.Image, true); err != nil {
				return nil, err
			}
		}
	}
	c.Items = d.Items
	if len(d.PreferredChains) > maxPreferred || len(d.PreferredTokens) > maxPreferred {
		return nil, validationf("display.preferredChains", "too_many_items", "preferredChains and preferredTokens take at most %d entries each.", maxPreferred)
	}
	for i, id := range d.PreferredChains {
		if ch, ok := s.cfg.Chains.Chain(id); !ok || ch.Family != chain.FamilyEVM {
			return nil, validationf(fmt.Sprintf("display.preferredChains[%d]", i), "unsupported_chain", "Chain %d is not supported.", id)
		}
	}
	c.PreferredChains = d.PreferredChains
	for i, t := range d.PreferredTokens {
		p := fmt.Sprintf("display.preferredTokens[%d]", i)
		if t.Chain == nil {
			return nil, validationf(p+".chain", "missing_field", "%s.chain is required.", p)
		}
		ch, ok := s.cfg.Chains.Chain(*t.Chain)
		if !ok || ch.Family != chain.FamilyEVM {
			return nil, validationf(p+".chain", "unsupported_chain", "Chain %d is not supported.", *t.Chain)
		}
		if _, err := chain.ParseEVMAddress(t.Address); err != nil {
			return nil, addressError(p+".address", err)
		}
		tok, ok := ch.Token(t.Address)
		if !ok {
			return nil, validationf(p+".address", "unsupported_token", "Token %s is not supported on %s.", t.Address, ch.Name)
		}
		c.PreferredTokens = append(c.PreferredTokens, session.TokenRef{Chain: ch.ID, Address: tok.Address})
	}
	for i, o := range d.PaymentOptions {
		if !slices.Contains(knownPaymentOptions, o) {
			return nil, validationf(fmt.Sprintf("display.paymentOptions[%d]", i), "invalid_value",
				"Unknown payment option %q; the options are %s.", truncate(o, 40), strings.Join(knownPaymentOptions, ", "))
		}
	}
	return c, nil
}

// checkURL accepts an absolute https URL, or with httpsOnly false also
// http: never javascript:, data: or a relative one, which the checkout
// page would turn into a script or a request to itself.
func checkURL(param, raw string, httpsOnly bool) error {
	u, err := url.Parse(raw)
	ok := err == nil && len(raw) <= maxURLLen && u.Host != "" && u.User == nil &&
		(u.Scheme == "https" || !httpsOnly && u.Scheme == "http")
	if ok {
		return nil
	}
	if httpsOnly {
		return validationf(param, "invalid_url", "%s must be an absolute https URL of at most %d characters.", param, maxURLLen)
	}
	return validationf(param, "invalid_url", "%s must be an absolute http(s) URL of at most %d characters.", param, maxURLLen)
}

// stringMetadata applies the seed's "keys and values are stored as
// strings": a number or boolean value is kept as its JSON text; an object,
// an array or null is refused rather than flattened.
func stringMetadata(m map[string]json.RawMessage) (map[string]string, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, raw := range m {
		raw = bytes.TrimSpace(raw)
		switch {
		case len(raw) > 0 && raw[0] == '"':
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, validationf("metadata."+k, "invalid_metadata", "metadata value for %q is not a valid string.", k)
			}
			out[k] = v
		case string(raw) == "true" || string(raw) == "false" || len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
			out[k] = string(raw)
		default:
			return nil, validationf("metadata."+k, "invalid_metadata", "metadata value for %q must be a string, number or boolean.", k)
		}
	}
	return out, nil
}

func (s *Server) getPayment(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromPaymentsKey(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !paymentIDPattern.MatchString(id) {
		return errPaymentNotFound
	}
	ss, err := s.cfg.Store.GetPayment(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && ss.MerchantID != merchantID {
		return errPaymentNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, paymentView(ss, s.cfg.Now()))
	return nil
}

func (s *Server) getPaymentByExternalID(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromPaymentsKey(r)
	if err != nil {
		return err
	}
	ext := r.PathValue("externalId")
	if ext == "" || len(ext) > maxExternalIDLen {
		return &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "payment_not_found", Message: "No such payment.", Param: "externalId"}
	}
	ss, err := s.cfg.Store.GetPaymentByExternalID(r.Context(), merchantID, ext)
	if errors.Is(err, store.ErrNotFound) {
		return &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "payment_not_found", Message: "No such payment.", Param: "externalId"}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, paymentView(ss, s.cfg.Now()))
	return nil
}
