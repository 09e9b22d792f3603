package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"

	"github.com/settle-dev/settle/internal/store"
)

const (
	typeIdempotency = "idempotency_error"
	maxIdemKeyLen   = 255
)

// idemScope names who authenticated a request, so an Idempotency-Key is
// only ever matched against the same merchant's (or client secret
// holder's) earlier requests. An error ends the request without storing
// anything.
type idemScope func(r *http.Request) (string, error)

// merchantScope authenticates with auth and scopes keys to the merchant;
// the merchant rides in the context so the handler does not look the key
// up again.
func (s *Server) merchantScope(auth func(*http.Request) (string, error)) idemScope {
	return func(r *http.Request) (string, error) {
		id, err := auth(r)
		if err != nil {
			return "", err
		}
		*r = *r.WithContext(context.WithValue(r.Context(), merchantKey{}, id))
		return "merchant:" + id, nil
	}
}

// sessionScope scopes keys to the session in the path: the client-secret
// endpoints. The secret is in the body, so a request of someone without
// it hashes differently and never replays the owner's response.
func sessionScope(r *http.Request) (string, error) { return "session:" + r.PathValue("id"), nil }

type merchantKey struct{}

// afterCommitKey holds functions to run once the request's effect is
// committed (an idempotent request commits after its handler returns).
type afterCommitKey struct{}

// afterCommit runs fn once what the request wrote is visible to others:
// at once, or after an idempotent request's commit.
func afterCommit(ctx context.Context, fn func()) {
	if fns, ok := ctx.Value(afterCommitKey{}).(*[]func()); ok {
		*fns = append(*fns, fn)
		return
	}
	fn()
}

// idempotent gives a POST the Idempotency-Key contract: the first response
// (any 2xx or 4xx but 401 and 429) is stored per scope and key for 24
// hours and replayed byte for byte; the same key with another request is
// a 400 idempotency_error; a concurrent request with the key waits for the
// first and replays it. The handler's writes share the stored response's
// transaction, so a crash keeps both or neither: a retry can never apply
// the effect twice. Without the header the handler runs as it is.
func (s *Server) idempotent(scope idemScope, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			return h(w, r)
		}
		if len(key) > maxIdemKeyLen || !printableASCII(key) {
			return &Error{Status: http.StatusBadRequest, Type: typeIdempotency, Code: "invalid_idempotency_key", Param: "Idempotency-Key",
				Message: "The Idempotency-Key header must be 1 to 255 printable ASCII characters."}
		}
		sc, err := scope(r)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			return jsonError(err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		hash := requestHash(r, body)
		claim, replay, err := s.cfg.Store.ClaimIdempotencyKey(r.Context(), sc, key, hash)
		switch {
		case errors.Is(err, store.ErrIdempotencyMismatch):
			return &Error{Status: http.StatusBadRequest, Type: typeIdempotency, Code: "idempotency_key_reused", Param: "Idempotency-Key",
				Message: "This Idempotency-Key was already used with a different request; use a new key for a new request."}
		case err != nil:
			return err
		case replay != nil:
			s.metrics.idempotent.WithLabelValues("replayed").Inc()
			w.Header().Set("Content-Type", replay.ContentType)
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(replay.Status)
			_, _ = w.Write(replay.Body)
			return nil
		}
		defer claim.Abort(r.Context()) // a no-op once completed
		var after []func()
		ctx := context.WithValue(claim.Context(r.Context()), afterCommitKey{}, &after)
		rec := &recorder{header: http.Header{}}
		if herr := h(rec, r.WithContext(ctx)); herr != nil {
			var e *Error
			if !errors.As(herr, &e) || e.Status >= 500 || e.Status == http.StatusUnauthorized || e.Status == http.StatusTooManyRequests {
				// Not the request's answer but the moment's: a retry
				// with the key must be able to succeed.
				return herr
			}
			rec = &recorder{header: http.Header{}}
			s.writeError(rec, r, herr)
		}
		if err := claim.Complete(r.Context(), store.StoredResponse{Status: rec.status, ContentType: rec.header.Get("Content-Type"), Body: rec.body.Bytes()}); err != nil {
			return err
		}
		s.metrics.idempotent.WithLabelValues("stored").Inc()
		for _, fn := range after {
			fn()
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
		return nil
	}
}

// requestHash identifies a request for the idempotency check: the method,
// the path and the exact body (headers such as the request id vary
// between honest retries).
func requestHash(r *http.Request, body []byte) []byte {
	h := sha256.New()
	_, _ = io.WriteString(h, r.Method+" "+r.URL.Path+"\n")
	_, _ = h.Write(body)
	return h.Sum(nil)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// recorder keeps a response in memory so it can be stored before it is
// sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
