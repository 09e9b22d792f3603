package api

import (
	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
)

// sessionPublic is SessionPublicInfo: what anyone holding the session id may
// read. It never carries metadata or the client secret.
type sessionPublic struct {
	SessionID     string             `json:"sessionId"`
	Status        session.Status     `json:"status"`
	Destination   destinationJSON    `json:"destination"`
	Display       session.Display    `json:"display"`
	PaymentMethod *paymentMethodJSON `json:"paymentMethod"`
	CreatedAt     int64              `json:"createdAt"`
	ExpiresAt     int64              `json:"expiresAt"`
}

// sessionFull is the Session object returned to the merchant's API key.
type sessionFull struct {
	sessionPublic
	Metadata     map[string]string `json:"metadata"`
	ClientSecret string            `json:"clientSecret"`
}

type destinationJSON struct {
	Type         string        `json:"type"`
	Address      string        `json:"address"`
	ChainID      uint64        `json:"chainId,omitempty"`
	ChainName    string        `json:"chainName,omitempty"`
	TokenAddress string        `json:"tokenAddress"`
	TokenSymbol  string        `json:"tokenSymbol"`
	AmountUnits  string        `json:"amountUnits,omitempty"`
	Calldata     string        `json:"calldata,omitempty"`
	Delivery     *deliveryJSON `json:"delivery,omitempty"`
}

type deliveryJSON struct {
	TxHash        string `json:"txHash"`
	ReceivedUnits string `json:"receivedUnits"`
}

type paymentMethodJSON struct {
	Type            string          `json:"type"`
	ReceiverAddress string          `json:"receiverAddress,omitempty"`
	FiatMethod      string          `json:"fiatMethod,omitempty"`
	CreatedAt       int64           `json:"createdAt"`
	Source          *session.Source `json:"source,omitempty"`
}

func publicView(s *session.Session, status session.Status) sessionPublic {
	d := s.Destination
	v := sessionPublic{
		SessionID: s.ID,
		Status:    status,
		Destination: destinationJSON{
			Type: d.Type, Address: d.Address, ChainID: d.ChainID, ChainName: d.ChainName,
			TokenAddress: d.TokenAddress, TokenSymbol: d.TokenSymbol, AmountUnits: d.AmountUnits,
			Calldata: d.Calldata,
		},
		Display:   s.Display,
		CreatedAt: s.CreatedAt.Unix(),
		ExpiresAt: s.ExpiresAt.Unix(),
	}
	if d.Delivery != nil {
		v.Destination.Delivery = &deliveryJSON{TxHash: d.Delivery.TxHash, ReceivedUnits: d.Delivery.ReceivedUnits}
	}
	if pm := s.PaymentMethod; pm != nil {
		v.PaymentMethod = &paymentMethodJSON{Type: pm.Type, FiatMethod: pm.FiatMethod, CreatedAt: pm.CreatedAt.Unix(), Source: pm.Source}
		if pm.Type == string(chain.FamilyEVM) && pm.ReceiverAddress != "" {
			v.PaymentMethod.ReceiverAddress = chain.ChecksumAddress(common.HexToAddress(pm.ReceiverAddress))
		} else {
			v.PaymentMethod.ReceiverAddress = pm.ReceiverAddress
		}
	}
	return v
}

func fullView(s *session.Session, status session.Status) sessionFull {
	return sessionFull{sessionPublic: publicView(s, status), Metadata: s.Metadata, ClientSecret: s.ClientSecret}
}
