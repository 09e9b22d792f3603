package api

import (
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/view"
)

// The Session views live in internal/view, so the event log renders the
// same object as these handlers; the names below keep api's call sites.
type (
	sessionPublic = view.SessionPublic
	sessionFull   = view.Session
)

func publicView(s *session.Session, status session.Status) sessionPublic {
	return view.Public(s, status)
}

func fullView(s *session.Session, status session.Status) sessionFull { return view.Full(s, status) }

func addressOut(evm bool, a string) string { return view.AddressOut(evm, a) }
