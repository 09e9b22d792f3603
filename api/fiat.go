package api

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// FiatProvider is an onramp: the payer pays it in local currency on its
// hosted page, and it sends the stablecoin it sold to the session's
// receiver, where the indexers see it like any deposit. settle never
// learns about the fiat side; a deposit that does not arrive is an unpaid
// session like any other.
//
// A real provider's Start creates an order through its API (amount, the
// destination address, and the chains and tokens settle indexes) and
// returns its widget's URL. Start must be idempotent per session: the
// paymentMethods call may be retried, and each answer carries hostedUrl.
type FiatProvider interface {
	Start(ctx context.Context, o FiatOrder) (hostedURL string, err error)
}

// FiatOrder is what a provider needs to fund one session.
type FiatOrder struct {
	SessionID string
	// Method is the payer's choice (interac, ach, sepa, apple_pay), or ""
	// for the provider's default.
	Method string
	// Receiver is the session's EVM receiver (EIP-55), the same address on
	// every EVM chain settle indexes.
	Receiver string
	// Chains are the indexed EVM chains and their accepted tokens: the
	// provider must send one of these tokens on one of these chains.
	Chains []*chain.Chain
	// AmountUSD is the amount to deliver as a decimal string (stablecoins
	// are taken 1:1), "" when the session takes any amount.
	AmountUSD string
	// ReturnURL is the checkout page to send the payer back to; "" for a
	// session paid outside the hosted page.
	ReturnURL string
}

var fiatMethods = []string{"interac", "ach", "sepa", "apple_pay"}

// startFiat sets the fiat payment method (allocating its receiver once)
// and asks the provider for the payer's hosted URL.
func (s *Server) startFiat(ctx context.Context, ss *session.Session, method, returnURL string) (*session.Session, string, error) {
	if s.cfg.Fiat == nil {
		return nil, "", &Error{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "payment_method_not_enabled",
			Param: "paymentMethod.type", Message: "Payment method fiat is not enabled on this server."}
	}
	if method != "" && !slices.Contains(fiatMethods, method) {
		return nil, "", validationf("paymentMethod.fiatMethod", "invalid_value", "paymentMethod.fiatMethod must be one of interac, ach, sepa or apple_pay, not %q.", truncate(method, 40))
	}
	updated, created, err := s.cfg.Store.SetFiatPaymentMethod(ctx, ss.ID, method, s.deriveEVM, s.cfg.Now().Truncate(1e9))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, "", errSessionNotFound
	case errors.Is(err, store.ErrConflict):
		return nil, "", &Error{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "session_not_open", Message: conflictMessage(err)}
	case err != nil:
		return nil, "", err
	}
	if created != nil {
		s.metrics.receivers.WithLabelValues(created.Family).Inc()
		s.logger.InfoContext(ctx, "receiver allocated", "session_id", ss.ID, "family", created.Family, "derivation_index", created.Index, "payment_method", "fiat")
		if s.cfg.ReceiverCreated != nil {
			afterCommit(ctx, s.cfg.ReceiverCreated)
		}
	}
	var indexed []*chain.Chain
	for _, c := range s.cfg.Chains.ByFamily(chain.FamilyEVM) {
		if c.Indexed {
			indexed = append(indexed, c)
		}
	}
	url, err := s.cfg.Fiat.Start(ctx, FiatOrder{
		SessionID: ss.ID, Method: updated.PaymentMethod.FiatMethod, Receiver: addressOut(true, updated.PaymentMethod.ReceiverAddress),
		Chains: indexed, AmountUSD: ss.Destination.AmountUnits, ReturnURL: returnURL,
	})
	if err != nil {
		s.logger.ErrorContext(ctx, "fiat provider refused the order", "session_id", ss.ID, "err", err)
		return nil, "", &Error{Status: http.StatusBadGateway, Type: typeAPI, Code: "fiat_provider_unavailable",
			Message: "The fiat provider could not start the payment; retry later."}
	}
	return updated, url, nil
}
