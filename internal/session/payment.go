package session

// Payment is what the Payments API adds to a session it creates: a payment
// is a session seen through that API (the same receivers, deposits,
// payouts, ledger and expiry), never a second lifecycle.
type Payment struct {
	// ID is the payment's public id: 32 random bytes in base58.
	ID string
	// ExternalID is the merchant's own id, unique per merchant; "" if none.
	ExternalID string
	Checkout   Checkout
}

// Checkout is what the hosted checkout page shows and offers, as the
// merchant created it (every string hostile until escaped).
type Checkout struct {
	Intent          string     `json:"intent"`
	OrgLogo         string     `json:"orgLogo,omitempty"`
	Items           []Item     `json:"items,omitempty"`
	PreferredChains []uint64   `json:"preferredChains,omitempty"`
	PreferredTokens []TokenRef `json:"preferredTokens,omitempty"`
	// PaymentOptions nil means every option; empty means none beyond
	// paying from a wallet.
	PaymentOptions []string `json:"paymentOptions"`
	RedirectURI    string   `json:"redirectUri,omitempty"`
}

// Item is one line of what the payer buys.
type Item struct {
	Name         string `json:"name"`
	Description  string `json:"description,omitempty"`
	Image        string `json:"image,omitempty"`
	Price        string `json:"price,omitempty"`
	PriceDetails string `json:"priceDetails,omitempty"`
}

// TokenRef names a token by chain and contract address.
type TokenRef struct {
	Chain   uint64 `json:"chain"`
	Address string `json:"address"`
}

// PaymentStatus is the Payments API's name for where a session is.
type PaymentStatus string

// The statuses of the Payments API.
const (
	PaymentUnpaid    PaymentStatus = "payment_unpaid"
	PaymentStarted   PaymentStatus = "payment_started"
	PaymentCompleted PaymentStatus = "payment_completed"
	PaymentBounced   PaymentStatus = "payment_bounced"
)

// PaymentStatusOf maps a session status onto the Payments API's four. The
// Payments API has no expired status: a session that expired was never
// paid, so it reads payment_unpaid, as it did a moment before the deadline
// (the checkout page says it expired). A deposit removed by a reorg sends
// a processing session back to waiting_payment, and the payment back to
// payment_unpaid with it.
func PaymentStatusOf(s Status) PaymentStatus {
	switch s {
	case Processing:
		return PaymentStarted
	case Succeeded:
		return PaymentCompleted
	case Bounced:
		return PaymentBounced
	default: // requires_payment_method, waiting_payment, expired
		return PaymentUnpaid
	}
}
