package api

// The event log (README, "Events"): GET /v1/events lists the merchant's
// events newest first, each exactly the body a webhook delivers; GET
// /v1/events/{id} returns one. Filters: type=<event type> and
// subject=<session or payment id>. Another merchant's event answers
// exactly like a missing one.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/webhook"
)

// EventStore is what the event log's endpoints need from Postgres
// (*store.Store implements it).
type EventStore interface {
	// ListEvents answers store.ErrNotFound when StartingAfter is not one
	// of the merchant's events.
	ListEvents(ctx context.Context, q store.EventQuery) ([]store.Event, error)
	GetEvent(ctx context.Context, merchantID, eventID string) (*store.Event, error)
}

// maxSubjectLen bounds the subject filter: session ids are 32 characters,
// payment ids at most 44.
const maxSubjectLen = 64

var errEventNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "event_not_found", Message: "No such event.", Param: "id"}

// eventRoutes registers the event log's routes (none without
// Config.Events: they answer 404 like any unknown path).
func (s *Server) eventRoutes(handle func(string, handlerFunc)) {
	if s.cfg.Events == nil {
		return
	}
	handle("GET /v1/events", s.listEvents)
	handle("GET /v1/events/{id}", s.getEvent)
	for _, p := range []string{"/v1/events", "/v1/events/{id}"} {
		handle(p, methodNotAllowed)
	}
}

// merchantFromEither authenticates a merchant key sent either way: as the
// Sessions API sends it (Authorization: Bearer) or as the Payments API
// does (Api-Key), since both APIs' sessions emit events.
func (s *Server) merchantFromEither(r *http.Request) (string, error) {
	if r.Header.Get("Authorization") == "" && r.Header.Get("Api-Key") != "" {
		return s.merchantFromPaymentsKey(r)
	}
	return s.merchantFromKey(r)
}

// eventOut is an event on the wire: its stored body, as delivered.
type eventOut struct {
	id   string
	body json.RawMessage
}

func (e eventOut) MarshalJSON() ([]byte, error) { return e.body, nil }

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromEither(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	p, err := parseListParams(q, "type", "subject")
	if err != nil {
		return err
	}
	eq := store.EventQuery{MerchantID: merchantID, StartingAfter: p.StartingAfter, Limit: p.Fetch()}
	if q.Has("type") {
		if len(q["type"]) != 1 {
			return validationf("type", "invalid_value", "type may be given once.")
		}
		eq.Type = q.Get("type")
		// The test events of POST /v1/webhooks/{id}/test are in the log too.
		if eq.Type != webhook.TestEventType && !slices.Contains(store.EventTypes, eq.Type) {
			return validationf("type", "invalid_event_type", "type must be one of the event types (README, \"Events\").")
		}
	}
	if q.Has("subject") {
		if len(q["subject"]) != 1 {
			return validationf("subject", "invalid_value", "subject may be given once.")
		}
		eq.Subject = q.Get("subject")
		if eq.Subject == "" || len(eq.Subject) > maxSubjectLen {
			return validationf("subject", "invalid_subject", "subject must be a session or payment id.")
		}
	}
	rows, err := s.cfg.Events.ListEvents(r.Context(), eq)
	if errors.Is(err, store.ErrNotFound) {
		return invalidCursor()
	}
	if err != nil {
		return err
	}
	out := make([]eventOut, len(rows))
	for i, e := range rows {
		out[i] = eventOut{id: e.ID, body: e.Payload}
	}
	writeList(w, p, out, func(e eventOut) string { return e.id })
	return nil
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromEither(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(id) > maxCursorLen {
		return errEventNotFound
	}
	e, err := s.cfg.Events.GetEvent(r.Context(), merchantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return errEventNotFound
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventOut{id: e.ID, body: e.Payload})
	return nil
}
