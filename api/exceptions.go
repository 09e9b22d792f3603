package api

// The exceptions inbox (README, "Exceptions inbox"): GET /v1/exceptions
// lists the merchant's deposits that did not count (wrong token, late,
// after the session finished, overpaid, conversion dust, what a call
// returned, refunds that need a person) and its payouts that need
// attention; three actions close an open one, each audited in the ledger:
//
//	POST /v1/exceptions/{id}/refund  {"address": "0x…"}  pay the amount back (a payout the delivery executor sends)
//	POST /v1/exceptions/{id}/credit                      count the deposit toward its session after all
//	POST /v1/exceptions/{id}/resolve {"note": "…"}       mark it done by hand
//
// Ids are exc_<ledger entry id> for ledger exceptions and
// exc_payout_<payout id> for payouts that need attention. Another
// merchant's exception answers exactly like a missing one.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/internal/view"
)

// ExceptionStore is what the exceptions inbox needs from Postgres
// (*store.Store implements it).
type ExceptionStore interface {
	ListExceptions(ctx context.Context, merchantID string, f store.ExceptionFilter, after store.ExceptionCursor, limit int) ([]*store.Exception, error)
	// ExceptionCursorOf and GetException answer store.ErrNotFound for an
	// id that is not one of the merchant's.
	ExceptionCursorOf(ctx context.Context, merchantID, id string) (store.ExceptionCursor, error)
	GetException(ctx context.Context, merchantID, id string) (*store.Exception, error)
	// The actions answer a *store.ExceptionConflict when the exception's
	// state refuses them.
	RefundException(ctx context.Context, a store.ExceptionAction, to string) (*store.Exception, error)
	CreditException(ctx context.Context, a store.ExceptionAction) (*store.Exception, error)
	ResolveException(ctx context.Context, a store.ExceptionAction) (*store.Exception, error)
	// APIKeyID names the key that acts, for the audit entry.
	APIKeyID(ctx context.Context, key string) (string, error)
	// IsRunner reports whether address is the runner of a call payout:
	// tokens sent there would join that payout's call.
	IsRunner(ctx context.Context, address string) (bool, error)
}

// exceptionReasons are the reason filter's values.
var exceptionReasons = map[string]bool{
	"wrong_token": true, "late": true, "after_session_finished": true, "overpaid": true, "manual_refund": true,
	"call_returned": true, "conversion_dust": true, store.ReasonNeedsAttention: true,
}

var exceptionStatuses = map[string]bool{
	store.ExceptionOpen: true, store.ExceptionRefunded: true, store.ExceptionCredited: true, store.ExceptionResolved: true,
}

var errExceptionNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "exception_not_found", Message: "No such exception.", Param: "id"}

// exceptionRoutes registers the inbox's routes (none without
// Config.Exceptions: they answer 404 like any unknown path).
func (s *Server) exceptionRoutes(handle func(string, handlerFunc)) {
	if s.cfg.Exceptions == nil {
		return
	}
	act := func(h handlerFunc) handlerFunc { return s.idempotent(s.merchantScope(s.merchantFromKey), h) }
	handle("GET /v1/exceptions", s.listExceptions)
	handle("GET /v1/exceptions/{id}", s.getException)
	handle("POST /v1/exceptions/{id}/refund", act(s.refundException))
	handle("POST /v1/exceptions/{id}/credit", act(s.creditException))
	handle("POST /v1/exceptions/{id}/resolve", act(s.resolveException))
	for _, p := range []string{"/v1/exceptions", "/v1/exceptions/{id}", "/v1/exceptions/{id}/refund", "/v1/exceptions/{id}/credit", "/v1/exceptions/{id}/resolve"} {
		handle(p, methodNotAllowed)
	}
}

// listExceptions is GET /v1/exceptions?status=&reason=&limit=&starting_after=.
func (s *Server) listExceptions(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	p, err := parseListParams(q, "status", "reason")
	if err != nil {
		return err
	}
	var f store.ExceptionFilter
	for _, fl := range []struct {
		name  string
		dst   *string
		allow map[string]bool
	}{{"status", &f.Status, exceptionStatuses}, {"reason", &f.Reason, exceptionReasons}} {
		if !q.Has(fl.name) {
			continue
		}
		v := q[fl.name]
		if len(v) != 1 || !fl.allow[v[0]] {
			return validationf(fl.name, "invalid_value", "%s must be one of %s, given once.", fl.name, strings.Join(sortedKeys(fl.allow), ", "))
		}
		*fl.dst = v[0]
	}
	var after store.ExceptionCursor
	if p.StartingAfter != "" {
		after, err = s.cfg.Exceptions.ExceptionCursorOf(r.Context(), merchantID, p.StartingAfter)
		if errors.Is(err, store.ErrNotFound) {
			return invalidCursor()
		}
		if err != nil {
			return err
		}
	}
	rows, err := s.cfg.Exceptions.ListExceptions(r.Context(), merchantID, f, after, p.Fetch())
	if err != nil {
		return err
	}
	objs := make([]view.Exception, len(rows))
	for i, e := range rows {
		objs[i] = s.exceptionView(e)
	}
	writeList(w, p, objs, func(o view.Exception) string { return o.ID })
	return nil
}

func (s *Server) getException(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	e, err := s.loadException(r, merchantID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.exceptionView(e))
	return nil
}

func (s *Server) loadException(r *http.Request, merchantID string) (*store.Exception, error) {
	id := r.PathValue("id")
	if len(id) > 64 {
		return nil, errExceptionNotFound
	}
	e, err := s.cfg.Exceptions.GetException(r.Context(), merchantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errExceptionNotFound
	}
	return e, err
}

// exceptionView renders an item; a symbol the ledger did not record is
// taken from the chain's token list when settle knows the token.
func (s *Server) exceptionView(e *store.Exception) view.Exception {
	symbol, decimals := e.Symbol, e.Decimals
	if c, ok := s.cfg.Chains.Chain(e.ChainID); ok && symbol == "" {
		if t, ok := c.Token(e.Token); ok {
			symbol, decimals = t.Symbol, t.Decimals
		}
	}
	le := view.LedgerEntry{Reason: e.Reason, SessionID: e.SessionID, PaymentID: e.PaymentID, ChainID: e.ChainID, Token: e.Token,
		Symbol: symbol, Decimals: decimals, From: e.From, To: e.To, TxHash: e.TxHash, LogIndex: e.LogIndex, BlockNumber: e.BlockNumber,
		Amount: e.Amount, RecordedAt: e.CreatedAt}
	if res := e.Resolution; res != nil {
		le.Resolution = &view.Resolution{Action: res.Action, Note: res.Note, TxHash: res.TxHash, At: res.At}
	}
	v := view.ExceptionOf(le)
	// The store's id and status: a payout item's id is exc_payout_<id>.
	v.ID, v.Status = e.ID, e.Status
	return v
}

type refundExceptionRequest struct {
	Address *string `json:"address"`
	Note    *string `json:"note"`
}

type noteRequest struct {
	Note *string `json:"note"`
}

// refundException is POST /v1/exceptions/{id}/refund. The request names
// only where the money goes: the amount, token and chain are the
// exception's (an "amount" field is refused as unknown), and the store
// enforces the rest (store.RefundException).
func (s *Server) refundException(w http.ResponseWriter, r *http.Request) error {
	a, e, err := s.exceptionAction(r)
	if err != nil {
		return err
	}
	var req refundExceptionRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if a.Note, err = optionalNote(req.Note); err != nil {
		return err
	}
	if req.Address == nil || *req.Address == "" {
		return validationf("address", "missing_field", "address is required: where the refund is paid.")
	}
	addr, err := chain.ParseEVMAddress(*req.Address)
	if err != nil {
		return addressError("address", err)
	}
	to := strings.ToLower(addr.Hex())
	if err := s.checkPayee(r.Context(), "address", to, s.cfg.Chains.ByFamily(chain.FamilyEVM)); err != nil {
		return err
	}
	runner, err := s.cfg.Exceptions.IsRunner(r.Context(), to)
	if err != nil {
		return fmt.Errorf("checking whether the refund address is a runner: %w", err)
	}
	if runner {
		return validationf("address", "reserved_address", "address is a single-use runner of settle's executor; tokens sent there would join another payout's call.")
	}
	if strings.EqualFold(to, e.Token) {
		return validationf("address", "invalid_address", "address is the token's own contract; tokens sent there are lost.")
	}
	// The treasury pays refunds, so only in a token settle pays on a
	// chain whose driver it runs (EVM today).
	if c, ok := s.cfg.Chains.Chain(e.ChainID); !ok || c.Family != chain.FamilyEVM {
		return exceptionConflict("exception_not_refundable", "settle does not pay refunds on chain %d.", e.ChainID)
	} else if _, ok := c.Token(e.Token); !ok && e.Status == store.ExceptionOpen {
		return exceptionConflict("exception_not_refundable", "The deposit is in a token settle does not accept on %s; the treasury does not hold it, so settle cannot pay it back. Recover it by hand, then resolve the exception.", c.Name)
	}
	out, err := s.cfg.Exceptions.RefundException(r.Context(), a, to)
	if err != nil {
		return actionError(err)
	}
	s.logger.InfoContext(r.Context(), "exception refund scheduled", "exception_id", out.ID, "session_id", out.SessionID, "api_key_id", a.APIKeyID)
	writeJSON(w, http.StatusOK, s.exceptionView(out))
	return nil
}

// creditException is POST /v1/exceptions/{id}/credit (an optional note).
func (s *Server) creditException(w http.ResponseWriter, r *http.Request) error {
	a, _, err := s.exceptionAction(r)
	if err != nil {
		return err
	}
	if r.ContentLength != 0 {
		var req noteRequest
		if err := decodeJSON(w, r, &req); err != nil {
			return err
		}
		if a.Note, err = optionalNote(req.Note); err != nil {
			return err
		}
	}
	out, err := s.cfg.Exceptions.CreditException(r.Context(), a)
	if err != nil {
		return actionError(err)
	}
	s.logger.InfoContext(r.Context(), "exception credited", "exception_id", out.ID, "session_id", out.SessionID, "api_key_id", a.APIKeyID)
	writeJSON(w, http.StatusOK, s.exceptionView(out))
	return nil
}

// resolveException is POST /v1/exceptions/{id}/resolve {"note": "…"}.
func (s *Server) resolveException(w http.ResponseWriter, r *http.Request) error {
	a, _, err := s.exceptionAction(r)
	if err != nil {
		return err
	}
	var req noteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if a.Note, err = optionalNote(req.Note); err != nil {
		return err
	}
	if a.Note == "" {
		return validationf("note", "missing_field", "note is required: say how the exception was resolved.")
	}
	out, err := s.cfg.Exceptions.ResolveException(r.Context(), a)
	if err != nil {
		return actionError(err)
	}
	writeJSON(w, http.StatusOK, s.exceptionView(out))
	return nil
}

// exceptionAction authenticates an action and loads its exception: a
// missing one and another merchant's answer the same 404.
func (s *Server) exceptionAction(r *http.Request) (store.ExceptionAction, *store.Exception, error) {
	merchantID, err := s.merchantFromKey(r)
	if err != nil {
		return store.ExceptionAction{}, nil, err
	}
	_, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	keyID, err := s.cfg.Exceptions.APIKeyID(r.Context(), key)
	if errors.Is(err, store.ErrNotFound) {
		return store.ExceptionAction{}, nil, authError("invalid_api_key", "Invalid API key.")
	}
	if err != nil {
		return store.ExceptionAction{}, nil, err
	}
	e, err := s.loadException(r, merchantID)
	if err != nil {
		return store.ExceptionAction{}, nil, err
	}
	return store.ExceptionAction{MerchantID: merchantID, APIKeyID: keyID, ID: e.ID}, e, nil
}

// optionalNote checks a note: at most store.MaxExceptionNote characters of
// printable text (newlines allowed), trimmed.
func optionalNote(n *string) (string, error) {
	if n == nil {
		return "", nil
	}
	note := strings.TrimSpace(*n)
	if !utf8.ValidString(note) || utf8.RuneCountInString(note) > store.MaxExceptionNote {
		return "", validationf("note", "too_long", "note must be at most %d characters.", store.MaxExceptionNote)
	}
	for _, c := range note {
		if !unicode.IsPrint(c) && c != '\n' {
			return "", validationf("note", "invalid_value", "note must be printable text.")
		}
	}
	return note, nil
}

func exceptionConflict(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Type: typeInvalidRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// actionError maps a store refusal to its 409; anything else is internal.
func actionError(err error) error {
	var c *store.ExceptionConflict
	if errors.As(err, &c) {
		return exceptionConflict(c.Code, "%s", c.Message)
	}
	if errors.Is(err, store.ErrNotFound) {
		return errExceptionNotFound
	}
	return err
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
