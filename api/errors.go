package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Error types of the public error envelope, each tied to one HTTP status
// family.
const (
	typeAuthentication = "authentication_error"
	typeValidation     = "validation_error"
	typeInvalidRequest = "invalid_request_error"
	typeAPI            = "api_error"
)

// Error is an error a client sees, in the envelope
// {"error": {"type", "code", "message", "param"}}. Handlers return it; any
// other error becomes a logged 500 whose details never reach the client.
type Error struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func validationf(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: typeValidation, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

func authError(code, msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: code, Message: msg}
}

// errSessionNotFound is the one answer for a missing session and for a
// session of another merchant, so ids cannot be probed.
var errSessionNotFound = &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "session_not_found", Message: "No such session.", Param: "id"}

var errInternal = &Error{Status: http.StatusInternalServerError, Type: typeAPI, Code: "internal_error", Message: "Internal error. The request id in the X-Request-Id header identifies it in our logs."}

type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
}

// writeError is the one place that turns an error into an HTTP answer.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		s.logger.ErrorContext(r.Context(), "request failed", "err", err)
		e = errInternal
	}
	writeJSON(w, e.Status, errorBody{Error: errorJSON{Type: e.Type, Code: e.Code, Message: e.Message, Param: e.Param}})
}
