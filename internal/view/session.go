package view

import (
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
)

// SessionPublic is SessionPublicInfo: what anyone holding the session id may
// read. It never carries metadata or the client secret.
type SessionPublic struct {
	SessionID     string          `json:"sessionId"`
	Status        session.Status  `json:"status"`
	Destination   Destination     `json:"destination"`
	Display       session.Display `json:"display"`
	PaymentMethod *PaymentMethod  `json:"paymentMethod"`
	CreatedAt     int64           `json:"createdAt"`
	ExpiresAt     int64           `json:"expiresAt"`
}

// Session is the Session object returned to the merchant's API key.
type Session struct {
	SessionPublic
	Metadata     map[string]string `json:"metadata"`
	ClientSecret string            `json:"clientSecret"`
}

// Destination is a session's destination on the wire.
type Destination struct {
	Type         string    `json:"type"`
	Address      string    `json:"address"`
	ChainID      uint64    `json:"chainId,omitempty"`
	ChainName    string    `json:"chainName,omitempty"`
	TokenAddress string    `json:"tokenAddress"`
	TokenSymbol  string    `json:"tokenSymbol"`
	AmountUnits  string    `json:"amountUnits,omitempty"`
	Calldata     string    `json:"calldata,omitempty"`
	Delivery     *Delivery `json:"delivery,omitempty"`
}

// Delivery is the transfer that paid (or refunded) the session.
type Delivery struct {
	TxHash        string `json:"txHash"`
	ReceivedUnits string `json:"receivedUnits"`
}

// PaymentMethod is the session's current payment method on the wire.
type PaymentMethod struct {
	Type            string          `json:"type"`
	ReceiverAddress string          `json:"receiverAddress,omitempty"`
	FiatMethod      string          `json:"fiatMethod,omitempty"`
	CreatedAt       int64           `json:"createdAt"`
	Source          *session.Source `json:"source,omitempty"`
}

// Public renders a session for the wire. EVM addresses (destination,
// token, receiver, source) leave the API EIP-55 encoded whatever case they
// were sent or stored in: the published client's types say "checksum
// encoded" and key their token table by the checksummed address. Storage
// keeps what it has; only this view changes them. Addresses of other
// families (base58) are case-sensitive and go out as they are.
func Public(s *session.Session, status session.Status) SessionPublic {
	d := s.Destination
	evmDest := d.Type == string(chain.FamilyEVM)
	v := SessionPublic{
		SessionID: s.ID,
		Status:    status,
		Destination: Destination{
			Type: d.Type, Address: AddressOut(evmDest, d.Address), ChainID: d.ChainID, ChainName: d.ChainName,
			TokenAddress: AddressOut(evmDest, d.TokenAddress), TokenSymbol: d.TokenSymbol, AmountUnits: d.AmountUnits,
			Calldata: d.Calldata,
		},
		Display:   s.Display,
		CreatedAt: s.CreatedAt.Unix(),
		ExpiresAt: s.ExpiresAt.Unix(),
	}
	if d.Delivery != nil {
		v.Destination.Delivery = &Delivery{TxHash: d.Delivery.TxHash, ReceivedUnits: d.Delivery.ReceivedUnits}
	}
	if pm := s.PaymentMethod; pm != nil {
		// An evm payment method's receiver and deposit are on EVM chains,
		// and so is a fiat one's: the onramp pays an EVM receiver. That
		// receiver is the provider's business, not the payer's: the fiat
		// object has no receiverAddress.
		evm := pm.Type == string(chain.FamilyEVM) || pm.Type == "fiat"
		v.PaymentMethod = &PaymentMethod{Type: pm.Type, FiatMethod: pm.FiatMethod, CreatedAt: pm.CreatedAt.Unix()}
		if pm.Type != "fiat" {
			v.PaymentMethod.ReceiverAddress = AddressOut(evm, pm.ReceiverAddress)
		}
		if pm.Source != nil {
			src := *pm.Source // a copy: the session is not the view's to change
			src.Address, src.TokenAddress = AddressOut(evm, src.Address), AddressOut(evm, src.TokenAddress)
			v.PaymentMethod.Source = &src
		}
	}
	return v
}

// Full is the Session object for the merchant's API key: the public view
// plus metadata and the client secret.
func Full(s *session.Session, status session.Status) Session {
	return Session{SessionPublic: Public(s, status), Metadata: s.Metadata, ClientSecret: s.ClientSecret}
}

// AddressOut is an address as the API returns it: EIP-55 when evm and a
// well-formed EVM address, otherwise unchanged (other families' addresses,
// and "" for an absent one).
func AddressOut(evm bool, a string) string {
	if !evm {
		return a
	}
	parsed, err := chain.ParseEVMAddress(a)
	if err != nil {
		return a
	}
	return chain.ChecksumAddress(parsed)
}
