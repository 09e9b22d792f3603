package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/settle-dev/settle/webhook"
)

// WebhookStore is what the webhook endpoints need (webhook.Store).
type WebhookStore interface {
	CreateEndpoint(ctx context.Context, merchantID, url string, events []string, description string) (*webhook.Endpoint, error)
	GetEndpoint(ctx context.Context, merchantID, id string) (*webhook.Endpoint, error)
	ListEndpoints(ctx context.Context, merchantID string, n int, startingAfter string) ([]webhook.Endpoint, error)
	DeleteEndpoint(ctx context.Context, merchantID, id string) error
	RotateSecret(ctx context.Context, merchantID, id string) (*webhook.Endpoint, error)
	EnableEndpoint(ctx context.Context, merchantID, id string) (*webhook.Endpoint, error)
	SendTest(ctx context.Context, merchantID, id string) (string, error)
	ListAttempts(ctx context.Context, merchantID, endpointID string, n int, startingAfter int64) ([]webhook.Attempt, error)
	Replay(ctx context.Context, merchantID, eventID, endpointID string) (int, error)
}

var (
	endpointIDPattern = regexp.MustCompile(`^we_[0-9a-f]{32}$`)
	eventIDPattern    = regexp.MustCompile(`^evt_[0-9A-Za-z_-]{1,64}$`)
)

var errWebhookNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "webhook_not_found", Message: "No such webhook endpoint.", Param: "id"}

var errReplayEventNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "event_not_found", Message: "No such event.", Param: "id"}

// webhookRoutes registers the webhook endpoints' routes (none without
// Config.Webhooks: they answer 404 like any unknown path). The POSTs take no
// Idempotency-Key: a stored response would keep the shown-once secret in
// the idempotency table for a day, and repeating any of them is harmless
// (one more endpoint to delete, one more test or replay).
func (s *Server) webhookRoutes(handle func(string, handlerFunc)) {
	if s.cfg.Webhooks == nil {
		return
	}
	handle("POST /v1/webhooks", s.createWebhook)
	handle("GET /v1/webhooks", s.listWebhooks)
	handle("GET /v1/webhooks/{id}", s.getWebhook)
	handle("DELETE /v1/webhooks/{id}", s.deleteWebhook)
	handle("POST /v1/webhooks/{id}/rotate-secret", s.rotateWebhookSecret)
	handle("POST /v1/webhooks/{id}/test", s.testWebhook)
	handle("POST /v1/webhooks/{id}/enable", s.enableWebhook)
	handle("GET /v1/webhooks/{id}/attempts", s.listWebhookAttempts)
	handle("POST /v1/events/{id}/replay", s.replayEvent)
	for _, p := range []string{"/v1/webhooks", "/v1/webhooks/{id}", "/v1/webhooks/{id}/rotate-secret", "/v1/webhooks/{id}/test",
		"/v1/webhooks/{id}/enable", "/v1/webhooks/{id}/attempts", "/v1/events/{id}/replay"} {
		handle(p, methodNotAllowed)
	}
}

// webhookJSON is a webhook endpoint as the API shows it. Secret appears
// only in the answers to create and rotate-secret.
type webhookJSON struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	Description    string   `json:"description"`
	Events         []string `json:"events"`
	Enabled        bool     `json:"enabled"`
	DisabledReason *string  `json:"disabledReason"`
	CreatedAt      string   `json:"createdAt"`
	Secret         string   `json:"secret,omitempty"`
}

func renderWebhook(e *webhook.Endpoint) webhookJSON {
	out := webhookJSON{ID: e.ID, URL: e.URL, Description: e.Description, Events: e.Events, Enabled: e.Enabled,
		CreatedAt: strconv.FormatInt(e.CreatedAt.Unix(), 10), Secret: e.Secret}
	if out.Events == nil {
		out.Events = []string{}
	}
	if e.DisabledReason != "" {
		out.DisabledReason = &e.DisabledReason
	}
	return out
}

type attemptJSON struct {
	ID         string  `json:"id"`
	EventID    string  `json:"eventId"`
	EventType  string  `json:"eventType"`
	At         string  `json:"at"`
	StatusCode *int    `json:"statusCode"`
	LatencyMS  int     `json:"latencyMs"`
	Error      *string `json:"error"`
}

// attemptIDPrefix starts an attempt's public id; the rest is its row id.
const attemptIDPrefix = "wha_"

func renderAttempt(a webhook.Attempt) attemptJSON {
	out := attemptJSON{ID: attemptIDPrefix + strconv.FormatInt(a.ID, 10), EventID: a.EventID, EventType: a.EventType,
		At: strconv.FormatInt(a.At.Unix(), 10), LatencyMS: a.LatencyMS}
	if a.StatusCode != 0 {
		out.StatusCode = &a.StatusCode
	}
	if a.Error != "" {
		out.Error = &a.Error
	}
	return out
}

// webhookError maps the webhook store's errors to the envelope.
func webhookError(err error) error {
	var in *webhook.InputError
	switch {
	case errors.As(err, &in):
		return validationf(in.Param, "invalid_"+in.Param, "%s.", in.Message)
	case errors.Is(err, webhook.ErrNotFound):
		return errWebhookNotFound
	case errors.Is(err, webhook.ErrBadCursor):
		return invalidCursor()
	}
	return err
}

// webhookID reads the {id} path value, refusing malformed ids before any
// lookup.
func webhookID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !endpointIDPattern.MatchString(id) {
		return "", errWebhookNotFound
	}
	return id, nil
}

// createWebhook is POST /v1/webhooks {url, events?, description?}.
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	merchant, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	var req struct {
		URL         *string  `json:"url"`
		Events      []string `json:"events"`
		Description string   `json:"description"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.URL == nil || *req.URL == "" {
		return validationf("url", "missing_url", "url is required.")
	}
	e, err := s.cfg.Webhooks.CreateEndpoint(r.Context(), merchant, *req.URL, req.Events, req.Description)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusCreated, renderWebhook(e))
	return nil
}

// listWebhooks is GET /v1/webhooks?limit=&starting_after=.
func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	merchant, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	p, err := parseListParams(r.URL.Query())
	if err != nil {
		return err
	}
	if p.StartingAfter != "" && !endpointIDPattern.MatchString(p.StartingAfter) {
		return invalidCursor()
	}
	es, err := s.cfg.Webhooks.ListEndpoints(r.Context(), merchant, p.Fetch(), p.StartingAfter)
	if err != nil {
		return webhookError(err)
	}
	out := make([]webhookJSON, len(es))
	for i := range es {
		out[i] = renderWebhook(&es[i])
	}
	writeList(w, p, out, func(o webhookJSON) string { return o.ID })
	return nil
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	e, err := s.cfg.Webhooks.GetEndpoint(r.Context(), merchant, id)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusOK, renderWebhook(e))
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Webhooks.DeleteEndpoint(r.Context(), merchant, id); err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
	return nil
}

// rotateWebhookSecret answers with the new secret (shown once); the old
// one keeps signing alongside it for 24 hours.
func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	e, err := s.cfg.Webhooks.RotateSecret(r.Context(), merchant, id)
	if err != nil {
		return webhookError(err)
	}
	out := struct {
		webhookJSON
		PreviousSecretExpiresAt string `json:"previousSecretExpiresAt"`
	}{renderWebhook(e), strconv.FormatInt(s.cfg.Now().Add(webhook.RotationOverlap).Unix(), 10)}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// enableWebhook turns an endpoint the dispatcher disabled back on.
func (s *Server) enableWebhook(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	e, err := s.cfg.Webhooks.EnableEndpoint(r.Context(), merchant, id)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusOK, renderWebhook(e))
	return nil
}

// testWebhook queues a test event (isTestEvent true) to this endpoint
// only; its attempts appear under /attempts like any other.
func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	eventID, err := s.cfg.Webhooks.SendTest(r.Context(), merchant, id)
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"eventId": eventID, "type": webhook.TestEventType})
	return nil
}

// listWebhookAttempts is GET /v1/webhooks/{id}/attempts, newest first.
func (s *Server) listWebhookAttempts(w http.ResponseWriter, r *http.Request) error {
	merchant, id, err := s.webhookTarget(r)
	if err != nil {
		return err
	}
	p, err := parseListParams(r.URL.Query())
	if err != nil {
		return err
	}
	var after int64
	if p.StartingAfter != "" {
		n, ok := strings.CutPrefix(p.StartingAfter, attemptIDPrefix)
		if after, err = strconv.ParseInt(n, 10, 64); !ok || err != nil || after <= 0 {
			return invalidCursor()
		}
	}
	as, err := s.cfg.Webhooks.ListAttempts(r.Context(), merchant, id, p.Fetch(), after)
	if err != nil {
		return webhookError(err)
	}
	out := make([]attemptJSON, len(as))
	for i, a := range as {
		out[i] = renderAttempt(a)
	}
	writeList(w, p, out, func(o attemptJSON) string { return o.ID })
	return nil
}

// replayEvent is POST /v1/events/{id}/replay[?endpoint=we_…]: the event
// goes again (same id, same body, fresh signature) to the merchant's
// enabled endpoints that take its type, or to the one named.
func (s *Server) replayEvent(w http.ResponseWriter, r *http.Request) error {
	merchant, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !eventIDPattern.MatchString(id) {
		return errReplayEventNotFound
	}
	q := r.URL.Query()
	for name, vals := range q {
		if name != "endpoint" || len(vals) != 1 {
			return validationf(name, "unknown_parameter", "Unknown query parameter %q (only endpoint, once).", truncate(name, 64))
		}
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" && !endpointIDPattern.MatchString(endpoint) {
		return validationf("endpoint", "invalid_endpoint", "No such webhook endpoint.")
	}
	n, err := s.cfg.Webhooks.Replay(r.Context(), merchant, id, endpoint)
	if errors.Is(err, webhook.ErrNotFound) {
		return errReplayEventNotFound
	}
	if err != nil {
		return webhookError(err)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"eventId": id, "deliveries": n})
	return nil
}

// webhookTarget is the calling merchant and the endpoint id of the path,
// which every /v1/webhooks/{id} handler starts from.
func (s *Server) webhookTarget(r *http.Request) (merchant, id string, err error) {
	if merchant, err = s.merchantFromKey(r); err != nil {
		return "", "", err
	}
	if id, err = webhookID(r); err != nil {
		return "", "", err
	}
	return merchant, id, nil
}
