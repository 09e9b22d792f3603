package api

import (
	"time"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/view"
)

// The Payment view lives in internal/view (see view.go); these names keep
// api's call sites.
type (
	paymentJSON            = view.Payment
	paymentDisplayJSON     = view.PaymentDisplay
	paymentSourceJSON      = view.PaymentSource
	paymentDestinationJSON = view.PaymentDestination
)

func paymentView(s *session.Session, now time.Time) paymentJSON { return view.PaymentOf(s, now) }

func usdValue(units string) string { return view.USDValue(units) }
