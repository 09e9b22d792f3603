package view

import (
	"strconv"
	"strings"
	"time"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
)

// Payment is the Payments API's Payment object, field for field as the
// seed has it: chain ids and createdAt are strings there.
type Payment struct {
	ID          string                `json:"id"`
	Status      session.PaymentStatus `json:"status"`
	CreatedAt   string                `json:"createdAt"`
	Display     PaymentDisplay        `json:"display"`
	Source      *PaymentSource        `json:"source"`
	Destination PaymentDestination    `json:"destination"`
	ExternalID  *string               `json:"externalId"`
	Metadata    map[string]string     `json:"metadata"`
}

// PaymentDisplay is what the checkout page shows of a payment.
type PaymentDisplay struct {
	Intent       string `json:"intent"`
	PaymentValue string `json:"paymentValue"`
	Currency     string `json:"currency"`
}

// PaymentSource is the payer's deposit.
type PaymentSource struct {
	PayerAddress string `json:"payerAddress"`
	TxHash       string `json:"txHash"`
	ChainID      string `json:"chainId"`
	AmountUnits  string `json:"amountUnits"`
	TokenSymbol  string `json:"tokenSymbol"`
	TokenAddress string `json:"tokenAddress"`
}

// PaymentDestination is where the payment goes.
type PaymentDestination struct {
	DestinationAddress string  `json:"destinationAddress"`
	TxHash             *string `json:"txHash"`
	ChainID            string  `json:"chainId"`
	AmountUnits        string  `json:"amountUnits"`
	TokenSymbol        string  `json:"tokenSymbol"`
	TokenAddress       string  `json:"tokenAddress"`
	Calldata           string  `json:"calldata"`
}

// PaymentOf renders a payment's session as the Payment object, at time
// now (an expired session reads payment_unpaid: see
// session.PaymentStatusOf). It is a pure function of the session.
func PaymentOf(s *session.Session, now time.Time) Payment {
	d := s.Destination
	v := Payment{
		ID:        s.Payment.ID,
		Status:    session.PaymentStatusOf(s.StatusAt(now)),
		CreatedAt: strconv.FormatInt(s.CreatedAt.Unix(), 10),
		Display: PaymentDisplay{
			Intent:       s.Payment.Checkout.Intent,
			PaymentValue: USDValue(d.AmountUnits),
			Currency:     "USD",
		},
		Destination: PaymentDestination{
			DestinationAddress: AddressOut(true, d.Address),
			ChainID:            strconv.FormatUint(d.ChainID, 10),
			AmountUnits:        d.AmountUnits,
			TokenSymbol:        d.TokenSymbol,
			TokenAddress:       AddressOut(true, d.TokenAddress),
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
		v.Source = &PaymentSource{
			PayerAddress: AddressOut(evm, src.Address),
			TxHash:       src.TxHash,
			ChainID:      strconv.FormatUint(src.ChainID, 10),
			AmountUnits:  src.SentUnits,
			TokenSymbol:  src.TokenSymbol,
			TokenAddress: AddressOut(evm, src.TokenAddress),
		}
	}
	return v
}

// USDValue is a stablecoin amount as the page shows a price: at least two
// decimals ("1" → "1.00", "1.5" → "1.50"), and every decimal the merchant
// gave beyond that, never rounded ("1.234567" stays). Every token settle
// accepts is a USD stablecoin.
func USDValue(units string) string {
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
