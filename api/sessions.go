package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

var sessionIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}

// merchantFromKey authenticates the Authorization: Bearer header. Unknown
// and revoked keys get the same answer.
func (s *Server) merchantFromKey(r *http.Request) (string, error) {
	if id, ok := r.Context().Value(merchantKey{}).(string); ok {
		return id, nil // authenticated already (idempotent)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", authError("missing_api_key", "Send your API key as Authorization: Bearer <key>.")
	}
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", authError("invalid_authorization", "The Authorization header must be Bearer <key>.")
	}
	id, err := s.cfg.Store.MerchantByAPIKey(r.Context(), key)
	if errors.Is(err, store.ErrNotFound) {
		return "", authError("invalid_api_key", "Invalid API key.")
	}
	return id, err
}

// secretMatches compares client secrets in constant time over fixed-length
// digests, so neither the content nor the length of the secret leaks through
// timing.
func secretMatches(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func (s *Server) loadSession(r *http.Request) (*session.Session, error) {
	id := r.PathValue("id")
	if !sessionIDPattern.MatchString(id) {
		return nil, errSessionNotFound
	}
	ss, err := s.cfg.Store.GetSession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errSessionNotFound
	}
	return ss, err
}

// loadSessionWithSecret loads a session and checks its client secret.
func (s *Server) loadSessionWithSecret(r *http.Request, secret string) (*session.Session, error) {
	if secret == "" {
		return nil, authError("missing_client_secret", "clientSecret is required.")
	}
	ss, err := s.loadSession(r)
	if err != nil {
		return nil, err
	}
	if !secretMatches(secret, ss.ClientSecret) {
		return nil, authError("invalid_client_secret", "Invalid client secret for this session.")
	}
	return ss, nil
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) (err error) {
	outcome := "error"
	defer func() {
		var e *Error
		if errors.As(err, &e) {
			switch e.Status {
			case http.StatusUnauthorized:
				outcome = "unauthenticated"
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
				outcome = "invalid"
			}
		}
		s.metrics.sessionsCreated.WithLabelValues(outcome).Inc()
	}()
	merchantID, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	var req createSessionRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	v, err := s.validateCreate(r.Context(), &req)
	if err != nil {
		return err
	}
	now := s.cfg.Now().Truncate(1e9) // the API speaks unix seconds
	ss := &session.Session{
		ID:            randomHex(16),
		MerchantID:    merchantID,
		Status:        session.RequiresPaymentMethod,
		Destination:   v.dest,
		Display:       v.display,
		Metadata:      v.metadata,
		RefundAddress: v.refundAddress,
		ClientSecret:  randomHex(32),
		CreatedAt:     now,
		ExpiresAt:     now.Add(s.cfg.SessionTTL),
	}
	if err := s.cfg.Store.CreateSession(r.Context(), ss, v.decimals); err != nil {
		return err
	}
	outcome = "created"
	s.logger.InfoContext(r.Context(), "session created", "session_id", ss.ID, "merchant_id", merchantID)
	writeJSON(w, http.StatusCreated, map[string]any{"session": fullView(ss, ss.Status)})
	return nil
}

// getSession serves both views: the full Session to the owning merchant's
// API key, SessionPublicInfo to anyone else. A wrong key or a wrong client
// secret is an error rather than a silent downgrade, so integration bugs
// surface.
func (s *Server) getSession(w http.ResponseWriter, r *http.Request) error {
	now := s.cfg.Now()
	if r.Header.Get("Authorization") != "" {
		merchantID, err := s.merchantFromKey(r)
		if err != nil {
			return err
		}
		ss, err := s.loadSession(r)
		if err != nil {
			return err
		}
		if ss.MerchantID != merchantID {
			return errSessionNotFound
		}
		writeJSON(w, http.StatusOK, map[string]any{"session": fullView(ss, ss.StatusAt(now))})
		return nil
	}
	var ss *session.Session
	var err error
	if q := r.URL.Query(); q.Has("clientSecret") {
		ss, err = s.loadSessionWithSecret(r, q.Get("clientSecret"))
	} else {
		ss, err = s.loadSession(r)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": publicView(ss, ss.StatusAt(now))})
	return nil
}

func (s *Server) createPaymentMethod(w http.ResponseWriter, r *http.Request) error {
	var req paymentMethodRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ss, err := s.loadSessionWithSecret(r, req.ClientSecret)
	if err != nil {
		return err
	}
	pm := req.PaymentMethod
	if pm == nil {
		return validationf("paymentMethod", "missing_field", "paymentMethod is required.")
	}
	switch pm.Type {
	case "evm":
	case "fiat":
		updated, hosted, err := s.startFiat(r.Context(), ss, pm.FiatMethod, "")
		if err != nil {
			return err
		}
		fiat := map[string]string{"hostedUrl": hosted}
		if m := updated.PaymentMethod.FiatMethod; m != "" {
			fiat["fiatMethod"] = m
		}
		writeJSON(w, http.StatusOK, map[string]any{"session": publicView(updated, updated.StatusAt(s.cfg.Now())), "fiat": fiat})
		return nil
	case "tron", "solana":
		return &Error{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "payment_method_not_enabled",
			Param: "paymentMethod.type", Message: "Payment method " + pm.Type + " is not enabled on this server."}
	case "":
		return validationf("paymentMethod.type", "missing_field", "paymentMethod.type is required (evm, tron, solana or fiat).")
	default:
		return validationf("paymentMethod.type", "invalid_value", "paymentMethod.type must be evm, tron, solana or fiat, not %q.", pm.Type)
	}
	updated, err := s.setEVMMethod(r.Context(), ss)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": publicView(updated, updated.StatusAt(s.cfg.Now()))})
	return nil
}

// setEVMMethod sets the evm payment method on a session: a receiver
// address, the same on every EVM chain (allocated once; setting it again
// returns the same one).
func (s *Server) setEVMMethod(ctx context.Context, ss *session.Session) (*session.Session, error) {
	now := s.cfg.Now().Truncate(1e9)
	updated, created, err := s.cfg.Store.SetReceiverPaymentMethod(ctx, ss.ID, "evm", string(chain.FamilyEVM), s.deriveEVM, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errSessionNotFound
	case errors.Is(err, store.ErrConflict):
		return nil, &Error{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "session_not_open", Message: conflictMessage(err)}
	case err != nil:
		return nil, err
	}
	if created != nil {
		s.metrics.receivers.WithLabelValues(created.Family).Inc()
		s.logger.InfoContext(ctx, "receiver allocated", "session_id", ss.ID, "family", created.Family, "derivation_index", created.Index)
		if s.cfg.ReceiverCreated != nil {
			afterCommit(ctx, s.cfg.ReceiverCreated)
		}
	}
	return updated, nil
}

// deriveEVM is the EVM receiver at a derivation index, lowercase as stored.
func (s *Server) deriveEVM(index uint32) (string, error) {
	a, err := s.cfg.EVMReceivers.Address(index)
	if err != nil {
		return "", err
	}
	return strings.ToLower(a.Hex()), nil
}

// lookUpHint asks TxHint to apply a payer's transaction at once and returns
// the session as it is afterwards. The hint is optional, so anything that
// keeps it from being looked up answers with the session as it was: a
// lookup over the session's budget (hintLimiter; the caller cannot tell it
// from a transaction not yet mined, and polls again), or one that failed
// (node down, unknown transaction). Either way the indexer still finds the
// deposit.
func (s *Server) lookUpHint(ctx context.Context, ss *session.Session, txHash string) (*session.Session, error) {
	if !s.hints.allow(ss.ID, s.cfg.Now()) {
		s.metrics.txHints.WithLabelValues("limited").Inc()
		s.logger.DebugContext(ctx, "txHash hint over the session's lookup budget; not looked up", "session_id", ss.ID)
		return ss, nil
	}
	if err := s.cfg.TxHint(ctx, ss.ID, txHash); err != nil {
		s.metrics.txHints.WithLabelValues("error").Inc()
		s.logger.WarnContext(ctx, "looking up the txHash hint failed", "session_id", ss.ID, "err", err)
		return ss, nil
	}
	s.metrics.txHints.WithLabelValues("looked_up").Inc()
	return s.cfg.Store.GetSession(ctx, ss.ID)
}

// conflictMessage turns a store conflict into a sentence for the client.
func conflictMessage(err error) string {
	msg := strings.TrimSuffix(err.Error(), ": "+store.ErrConflict.Error())
	if msg == "" {
		return "The session cannot change in its current status."
	}
	return strings.ToUpper(msg[:1]) + msg[1:] + "."
}

// txHashPattern accepts an EVM or Tron transaction hash (32 bytes of hex) or
// a Solana signature (base58, 64 bytes: 86 to 88 characters).
var txHashPattern = regexp.MustCompile(`^(0x)?[0-9a-fA-F]{64}$|^[1-9A-HJ-NP-Za-km-z]{86,88}$`)

// checkSession answers a status poll. With a txHash hint it first asks the
// reconciler to look that transaction up on chain (TxHint), so a payer who
// says "I paid" sees processing without waiting for the indexer. That holds
// in every status that can still take a deposit: before one is detected,
// and while processing (an underpaid session's top-up). A terminal session
// never changes, so its hint is not looked up.
func (s *Server) checkSession(w http.ResponseWriter, r *http.Request) error {
	var req checkRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ss, err := s.loadSessionWithSecret(r, req.ClientSecret)
	if err != nil {
		return err
	}
	if req.TxHash != "" && !txHashPattern.MatchString(req.TxHash) {
		return validationf("txHash", "invalid_tx_hash", "txHash must be a 0x-prefixed 32-byte hex hash or a base58 Solana signature.")
	}
	if req.TxHash != "" && s.cfg.TxHint != nil && !ss.Status.Terminal() && strings.HasPrefix(req.TxHash, "0x") {
		if ss, err = s.lookUpHint(r.Context(), ss, strings.ToLower(req.TxHash)); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": publicView(ss, ss.StatusAt(s.cfg.Now()))})
	return nil
}
