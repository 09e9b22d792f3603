package api

import (
	"time"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/view"
)

// The Payment view lives in internal/view (see view.go); this name keeps
// api's call sites.
type paymentJSON = view.Payment

func paymentView(s *session.Session, now time.Time) paymentJSON { return view.PaymentOf(s, now) }

func usdValue(units string) string { return view.USDValue(units) }
