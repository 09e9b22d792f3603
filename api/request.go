package api

import (
	"context"
	"errors"
	"net/url"
	"unicode/utf8"

	"github.com/gagliardetto/solana-go"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
)

// Limits on merchant-supplied fields. Metadata follows Stripe's limits, which
// merchants already design around.
const (
	maxMetadataKeys     = 50
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
	maxTitleLen         = 200
	maxVerbLen          = 50
	maxURLLen           = 2048
	maxCalldataBytes    = 16 << 10
)

type createSessionRequest struct {
	Destination   *destinationRequest `json:"destination"`
	Display       *displayRequest     `json:"display"`
	Metadata      map[string]string   `json:"metadata"`
	RefundAddress *string             `json:"refundAddress"`
}

type destinationRequest struct {
	Type         string  `json:"type"`
	Address      string  `json:"address"`
	ChainID      *uint64 `json:"chainId"`
	TokenAddress string  `json:"tokenAddress"`
	AmountUnits  *string `json:"amountUnits"`
	Calldata     *string `json:"calldata"`
}

type displayRequest struct {
	Title       string `json:"title"`
	Verb        string `json:"verb"`
	ThemeCSSURL string `json:"themeCssUrl"`
}

// validated is a create request that passed every check.
type validated struct {
	dest          session.Destination
	chain         *chain.Chain // the destination's chain; nil for solana
	decimals      uint8
	display       session.Display
	metadata      map[string]string
	refundAddress string
}

func (s *Server) validateCreate(ctx context.Context, req *createSessionRequest) (*validated, error) {
	v := &validated{}
	if req.Destination == nil {
		return nil, validationf("destination", "missing_field", "destination is required.")
	}
	var err error
	switch d := req.Destination; d.Type {
	case "evm":
		err = s.validateEVMDestination(d, v)
	case "solana":
		err = s.validateSolanaDestination(d, v)
	case "":
		err = validationf("destination.type", "missing_field", "destination.type is required (evm or solana).")
	default:
		err = validationf("destination.type", "invalid_value", "destination.type must be evm or solana, not %q.", d.Type)
	}
	if err != nil {
		return nil, err
	}
	if err := validateDisplay(req.Display, &v.display); err != nil {
		return nil, err
	}
	if err := validateMetadata(req.Metadata); err != nil {
		return nil, err
	}
	v.metadata = req.Metadata
	if req.RefundAddress != nil {
		if _, err := chain.ParseEVMAddress(*req.RefundAddress); err != nil {
			return nil, addressError("refundAddress", err)
		}
		v.refundAddress = *req.RefundAddress
	}
	// The checks below ask Postgres and a chain's node, so they come last:
	// a request that fails anyway costs neither.
	if v.chain != nil {
		if err := s.checkPayee(ctx, "destination.address", v.dest.Address, []*chain.Chain{v.chain}); err != nil {
			return nil, err
		}
	}
	if v.refundAddress != "" {
		// A refund can be paid on any EVM chain, so no chain's executor may
		// receive it.
		if err := s.checkPayee(ctx, "refundAddress", v.refundAddress, s.cfg.Chains.ByFamily(chain.FamilyEVM)); err != nil {
			return nil, err
		}
	}
	if v.chain != nil && v.dest.Calldata != "" {
		if err := s.checkCalldataTarget(ctx, v.chain, v.dest.Address); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (s *Server) validateEVMDestination(d *destinationRequest, v *validated) error {
	if d.ChainID == nil {
		return validationf("destination.chainId", "missing_field", "destination.chainId is required for an evm destination.")
	}
	c, ok := s.cfg.Chains.Chain(*d.ChainID)
	if !ok || c.Family != chain.FamilyEVM {
		return validationf("destination.chainId", "unsupported_chain", "Chain %d is not supported.", *d.ChainID)
	}
	if _, err := chain.ParseEVMAddress(d.Address); err != nil {
		return addressError("destination.address", err)
	}
	if _, err := chain.ParseEVMAddress(d.TokenAddress); err != nil {
		return addressError("destination.tokenAddress", err)
	}
	tok, ok := c.Token(d.TokenAddress)
	if !ok {
		return validationf("destination.tokenAddress", "unsupported_token", "Token %s is not supported on %s.", d.TokenAddress, c.Name)
	}
	if d.Calldata != nil {
		data, err := chain.ParseHexData(*d.Calldata, maxCalldataBytes)
		if err != nil {
			return validationf("destination.calldata", "invalid_calldata", "destination.calldata must be 0x-prefixed hex of at most %d bytes.", maxCalldataBytes)
		}
		if len(data) > 0 {
			v.dest.Calldata = *d.Calldata
		}
	}
	v.chain, v.dest.ChainID, v.dest.ChainName = c, c.ID, c.Name
	return setAmount(d, c, tok, v)
}

func (s *Server) validateSolanaDestination(d *destinationRequest, v *validated) error {
	chains := s.cfg.Chains.ByFamily(chain.FamilySolana)
	if len(chains) == 0 {
		return validationf("destination.type", "unsupported_chain", "Solana destinations are not enabled.")
	}
	c := chains[0]
	if d.ChainID != nil {
		return validationf("destination.chainId", "invalid_value", "A solana destination has no chainId.")
	}
	if d.Calldata != nil {
		return validationf("destination.calldata", "invalid_value", "A solana destination has no calldata.")
	}
	if _, err := solana.PublicKeyFromBase58(d.Address); err != nil {
		return validationf("destination.address", "invalid_address", "destination.address must be a base58 Solana address.")
	}
	tok, ok := c.Token(d.TokenAddress)
	if !ok {
		return validationf("destination.tokenAddress", "unsupported_token", "Token %s is not supported on %s.", d.TokenAddress, c.Name)
	}
	return setAmount(d, c, tok, v)
}

func setAmount(d *destinationRequest, c *chain.Chain, tok chain.Token, v *validated) error {
	v.dest.Type, v.dest.Address, v.dest.TokenAddress, v.dest.TokenSymbol = d.Type, d.Address, d.TokenAddress, tok.Symbol
	v.decimals = tok.Decimals
	if d.AmountUnits == nil {
		return nil // open amount: whatever the payer sends
	}
	amt, err := chain.ParseUnits(*d.AmountUnits, tok.Decimals)
	switch {
	case errors.Is(err, chain.ErrTooManyDecimals):
		return validationf("destination.amountUnits", "too_many_decimals", "destination.amountUnits: %v (%s); amounts are never rounded.", err, tok.Symbol)
	case err != nil:
		return validationf("destination.amountUnits", "invalid_amount", "destination.amountUnits must be a decimal string such as \"10.50\" (digits and at most one dot; no sign, exponent or spaces).")
	case amt.Sign() == 0:
		return validationf("destination.amountUnits", "invalid_amount", "destination.amountUnits must be greater than zero.")
	}
	v.dest.AmountUnits, v.dest.AmountRaw = *d.AmountUnits, amt
	return nil
}

func addressError(param string, err error) error {
	if errors.Is(err, chain.ErrBadChecksum) {
		return validationf(param, "invalid_checksum", "%s has mixed case but an invalid EIP-55 checksum; send it all-lowercase or correctly checksummed.", param)
	}
	return validationf(param, "invalid_address", "%s must be a 0x-prefixed 20-byte hex address.", param)
}

func validateDisplay(d *displayRequest, out *session.Display) error {
	if d == nil {
		return validationf("display", "missing_field", "display is required.")
	}
	switch {
	case d.Title == "":
		return validationf("display.title", "missing_field", "display.title is required.")
	case utf8.RuneCountInString(d.Title) > maxTitleLen:
		return validationf("display.title", "too_long", "display.title is longer than %d characters.", maxTitleLen)
	case utf8.RuneCountInString(d.Verb) > maxVerbLen:
		return validationf("display.verb", "too_long", "display.verb is longer than %d characters.", maxVerbLen)
	}
	if d.ThemeCSSURL != "" {
		u, err := url.Parse(d.ThemeCSSURL)
		if err != nil || len(d.ThemeCSSURL) > maxURLLen || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return validationf("display.themeCssUrl", "invalid_url", "display.themeCssUrl must be an absolute http(s) URL of at most %d characters.", maxURLLen)
		}
	}
	*out = session.Display{Title: d.Title, Verb: d.Verb, ThemeCSSURL: d.ThemeCSSURL}
	if out.Verb == "" {
		out.Verb = "Deposit"
	}
	return nil
}

func validateMetadata(m map[string]string) error {
	if len(m) > maxMetadataKeys {
		return validationf("metadata", "too_many_keys", "metadata has %d keys; at most %d are allowed.", len(m), maxMetadataKeys)
	}
	for k, v := range m {
		switch {
		case k == "":
			return validationf("metadata", "invalid_metadata", "metadata keys must not be empty.")
		case utf8.RuneCountInString(k) > maxMetadataKeyLen:
			return validationf("metadata", "invalid_metadata", "metadata key %q is longer than %d characters.", truncate(k, maxMetadataKeyLen), maxMetadataKeyLen)
		case utf8.RuneCountInString(v) > maxMetadataValueLen:
			return validationf("metadata."+k, "invalid_metadata", "metadata value for %q is longer than %d characters.", k, maxMetadataValueLen)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

type paymentMethodRequest struct {
	ClientSecret  string          `json:"clientSecret"`
	Locale        string          `json:"locale"`
	PaymentMethod *paymentMethodP `json:"paymentMethod"`
}

// paymentMethodP accepts every field the client SDK sends for any type, so
// SDK requests are never refused for a field the chosen type ignores (evm
// uses none of them).
type paymentMethodP struct {
	Type           string   `json:"type"`
	AmountUSD      *float64 `json:"amountUsd"`
	WalletAddress  string   `json:"walletAddress"`
	InputTokenMint string   `json:"inputTokenMint"`
	FiatMethod     string   `json:"fiatMethod"`
}

type checkRequest struct {
	ClientSecret string `json:"clientSecret"`
	TxHash       string `json:"txHash"`
}
