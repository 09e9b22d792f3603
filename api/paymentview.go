package api

import (
	"strconv"
	"strings"
	"time"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
)

// paymentJSON is the Payments API's Payment object, field for field as the
// seed has it: chain ids and createdAt are strings there.
type paymentJSON struct {
	ID          string                 `json:"id"`
	Status      session.PaymentStatus  `json:"status"`
	CreatedAt   string                 `json:"createdAt"`
	Display     paymentDisplayJSON     `json:"display"`
	Source      *paymentSourceJSON     `json:"source"`
	Destination paymentDestinationJSON `json:"destination"`
	ExternalID  *string                `json:"externalId"`
	Metadata    map[string]string      `json:"metadata"`
}

type paymentDisplayJSON struct {
	Intent       string `json:"intent"`
	PaymentValue string `json:"paymentValue"`
	Currency     string `json:"currency"`
}

type paymentSourceJSON struct {
	PayerAddress string `json:"payerAddress"`
	TxHash       string `json:"txHash"`
	ChainID      string `json:"chainId"`
	AmountUnits  string `json:"amountUnits"`
	TokenSymbol  string `json:"tokenSymbol"`
	TokenAddress string `json:"tokenAddress"`
}

type paymentDestinationJSON struct {
	DestinationAddress string  `json:"destinationAddress"`
	TxHash             *string `json:"txHash"`
	ChainID            string  `json:"chainId"`
	AmountUnits        string  `json:"amountUnits"`
	TokenSymbol        string  `json:"tokenSymbol"`
	TokenAddress       string  `json:"tokenAddress"`
	Calldata           string  `json:"calldata"`
}

// paymentView renders a payment's session as the Payment object, at time
// now (an expired session reads payment_unpaid: see
// session.PaymentStatusOf). It is a pure function of the session.
func paymentView(s *session.Session, now time.Time) paymentJSON {
	d := s.Destination
	v := paymentJSON{
		ID:        s.Payment.ID,
		Status:    session.PaymentStatusOf(s.StatusAt(now)),
		CreatedAt: strconv.FormatInt(s.CreatedAt.Unix(), 10),
		Display: paymentDisplayJSON{
			Intent:       s.Payment.Checkout.Intent,
			PaymentValue: usdValue(d.AmountUnits),
			Currency:     "USD",
		},
		Destination: paymentDestinationJSON{
			DestinationAddress: addressOut(true, d.Address),
			ChainID:            strconv.FormatUint(d.ChainID, 10),
			AmountUnits:        d.AmountUnits,
			TokenSymbol:        d.TokenSymbol,
			TokenAddress:       addressOut(true, d.TokenAddress),
			Calldata:           "0x",
		},
		Metadata: s.Metadata,
	}
	if d.Calldata != "" {
		v.Destination.Calldata = d.Calldata
	}
	// The destination's txHash is the transfer that paid it: a bounce's
	// delivery is the refund, which did not pay the destination.
	if s.Status == session.Succeeded && d.Delivery != nil {
		h := d.Delivery.TxHash
		v.Destination.TxHash = &h
	}
	if s.Payment.ExternalID != "" {
		e := s.Payment.ExternalID
		v.ExternalID = &e
	}
	if pm := s.PaymentMethod; pm != nil && pm.Source != nil {
		src := pm.Source
		evm := src.ChainID != chain.SolanaChainID && src.ChainID != chain.TronChainID
		v.Source = &paymentSourceJSON{
			PayerAddress: addressOut(evm, src.Address),
			TxHash:       src.TxHash,
			ChainID:      strconv.FormatUint(src.ChainID, 10),
			AmountUnits:  src.SentUnits,
			TokenSymbol:  src.TokenSymbol,
			TokenAddress: addressOut(evm, src.TokenAddress),
		}
	}
	return v
}

// usdValue is a stablecoin amount as the page shows a price: at least two
// decimals ("1" → "1.00", "1.5" → "1.50"), and every decimal the merchant
// gave beyond that, never rounded ("1.234567" stays). Every token settle
// accepts is a USD stablecoin.
func usdValue(units string) string {
	if units == "" {
		return ""
	}
	whole, frac, _ := strings.Cut(units, ".")
	whole = strings.TrimLeft(whole, "0")
	if whole == "" {
		whole = "0"
	}
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return whole + "." + frac
}
