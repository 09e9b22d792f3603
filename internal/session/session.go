// Package session holds the deposit session domain: its statuses, the rules
// for moving between them, and the data a session carries. It does no I/O, so
// every rule here is tested with plain table tests.
package session

import (
	"fmt"
	"math/big"
	"time"
)

// Status is where a session is in its lifecycle.
type Status string

// The session statuses of the public API.
const (
	RequiresPaymentMethod Status = "requires_payment_method"
	WaitingPayment        Status = "waiting_payment"
	Processing            Status = "processing"
	Succeeded             Status = "succeeded"
	Bounced               Status = "bounced"
	Expired               Status = "expired"
)

// Terminal reports whether s can never change again.
func (s Status) Terminal() bool {
	return s == Succeeded || s == Bounced || s == Expired
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case RequiresPaymentMethod, WaitingPayment, Processing, Succeeded, Bounced, Expired:
		return true
	}
	return false
}

// Expirable reports whether a session in status s expires once its deadline
// passes: only while no deposit has been detected.
func (s Status) Expirable() bool {
	return s == RequiresPaymentMethod || s == WaitingPayment
}

// transitions lists every allowed status change. Anything not listed,
// including any change out of a terminal status, is refused.
var transitions = map[Status][]Status{
	RequiresPaymentMethod: {WaitingPayment, Processing, Expired},
	WaitingPayment:        {Processing, Expired},
	// A deposit removed by a reorg before it was final sends the session
	// back to waiting for payment.
	Processing: {WaitingPayment, Succeeded, Bounced},
}

// CanTransition reports whether a session may move from one status to
// another.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// ErrTransition is returned for a status change the lifecycle forbids.
type ErrTransition struct{ From, To Status }

func (e ErrTransition) Error() string {
	return fmt.Sprintf("session cannot move from %s to %s", e.From, e.To)
}

// Transition checks a status change and returns ErrTransition if it is not
// allowed.
func Transition(from, to Status) error {
	if !CanTransition(from, to) {
		return ErrTransition{From: from, To: to}
	}
	return nil
}

// Destination is where a session's funds go, as the merchant created it.
type Destination struct {
	Type         string // "evm" or "solana"
	Address      string
	ChainID      uint64 // 0 for Solana destinations
	ChainName    string
	TokenAddress string
	TokenSymbol  string
	// AmountUnits is the merchant's decimal string ("" for an open amount);
	// AmountRaw the same value in the token's smallest unit.
	AmountUnits string
	AmountRaw   *big.Int
	Calldata    string
	Delivery    *Delivery
}

// Delivery is the transfer that paid the destination (or refunded a bounce).
type Delivery struct {
	TxHash        string
	ReceivedUnits string
}

// Display is what the checkout shows the payer.
type Display struct {
	Title       string `json:"title"`
	Verb        string `json:"verb"`
	ThemeCSSURL string `json:"themeCssUrl,omitempty"`
}

// PaymentMethod is how the payer pays: the latest one set on a session.
type PaymentMethod struct {
	Type            string // evm, tron, solana, fiat
	ReceiverAddress string // canonical (lowercase hex on EVM)
	FiatMethod      string
	CreatedAt       time.Time
	Source          *Source
}

// Source is the deposit detected for a payment method.
type Source struct {
	Address      string `json:"address,omitempty"`
	ChainID      uint64 `json:"chainId"`
	ChainName    string `json:"chainName"`
	TokenAddress string `json:"tokenAddress"`
	TokenSymbol  string `json:"tokenSymbol"`
	SentUnits    string `json:"sentUnits"`
	TxHash       string `json:"txHash,omitempty"`
}

// Session is one deposit attempt.
type Session struct {
	ID            string
	MerchantID    string
	Status        Status
	Destination   Destination
	Display       Display
	Metadata      map[string]string
	RefundAddress string
	ClientSecret  string
	CreatedAt     time.Time
	ExpiresAt     time.Time
	PaymentMethod *PaymentMethod
	// Payment is set on a session the Payments API created; nil for one
	// of the Sessions API.
	Payment *Payment
	// AttributedThrough is the block time up to which every indexed
	// chain's reconciler has attributed final blocks, read in the same
	// snapshot as the session; zero when no chain is indexed (the deadline
	// alone decides), and the Unix epoch while some indexed chain has
	// attributed none.
	AttributedThrough time.Time
}

// StatusAt is the status a reader sees at time now: a session whose deadline
// has passed with no deposit detected reads as expired as soon as that is
// known, even before the expiry loop has persisted it.
//
// Known means: without a receiver, at the deadline; with one, once every
// indexed chain's reconciler has attributed final blocks (which no reorg can
// replace) stamped at or after the deadline.
// Until then a deposit mined in time (block time before the deadline; a
// block's stamp can trail the wall clock by seconds) may still arrive, and
// it must move the session to processing — after a reader had been told
// "expired", which is final, that would contradict it.
func (s *Session) StatusAt(now time.Time) Status {
	if !s.Status.Expirable() || !s.DeadlinePassed(now) {
		return s.Status
	}
	if s.Status == WaitingPayment && !s.AttributedThrough.IsZero() && s.AttributedThrough.Before(s.ExpiresAt) {
		return s.Status
	}
	return Expired
}

// DeadlinePassed reports whether the session's deadline is behind now,
// whatever its status reads: past it nothing about the payment may change.
func (s *Session) DeadlinePassed(now time.Time) bool {
	return !now.Before(s.ExpiresAt)
}
