// Package api serves settle's public HTTP APIs (the Sessions API under /v1),
// /healthz and /readyz. Its metrics go to Config.Registerer; the command
// serves them on a listener of their own (api.metrics_listen), never on the
// public one.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// Store is the persistence the API needs.
type Store interface {
	MerchantByAPIKey(ctx context.Context, key string) (string, error)
	CreateSession(ctx context.Context, s *session.Session, decimals uint8) error
	GetSession(ctx context.Context, id string) (*session.Session, error)
	SetReceiverPaymentMethod(ctx context.Context, sessionID, pmType, family string, derive store.DeriveFunc, now time.Time) (*session.Session, *store.Receiver, error)
	SetFiatPaymentMethod(ctx context.Context, sessionID, fiatMethod string, derive store.DeriveFunc, now time.Time) (*session.Session, *store.Receiver, error)
	// IsReceiver reports whether address (EVM: any letter case) is a
	// receiver of the family, of any session.
	IsReceiver(ctx context.Context, family, address string) (bool, error)
	CreatePayment(ctx context.Context, s *session.Session, decimals uint8) (*session.Session, bool, error)
	GetPayment(ctx context.Context, paymentID string) (*session.Session, error)
	GetPaymentByExternalID(ctx context.Context, merchantID, externalID string) (*session.Session, error)
	// ListSessions returns a page of a merchant's sessions (api/lists.go).
	ListSessions(ctx context.Context, q store.ListQuery) ([]*session.Session, error)
	ClaimIdempotencyKey(ctx context.Context, scope, key string, requestHash []byte) (*store.IdempotencyClaim, *store.StoredResponse, error)
	PruneIdempotencyKeys(ctx context.Context) (int64, error)
}

// CodeChecker looks at a chain's state for the create checks.
type CodeChecker interface {
	// HasCode reports whether address (0x-hex, any case) has contract code
	// on chain chainID at the latest block. When the checker has no way to
	// look at that chain (no node configured), it returns an error matching
	// ErrCodeUnchecked, and the API accepts the calldata unchecked.
	HasCode(ctx context.Context, chainID uint64, address string) (bool, error)
}

// ErrCodeUnchecked is matched (errors.Is) by a CodeChecker error that means
// "this chain cannot be checked", as opposed to a failed check.
var ErrCodeUnchecked = errors.New("no node to check contract code on this chain")

// EVMReceivers derives EVM receiver addresses from public derivation data.
type EVMReceivers interface {
	Address(index uint32) (common.Address, error)
}

// Config configures a Server.
type Config struct {
	Chains       *chain.Registry
	Store        Store
	EVMReceivers EVMReceivers
	// Treasury is the EVM address that pays deliveries and refunds. A
	// session may not pay it or refund to it: that would let a merchant
	// move the treasury's float to itself under a false name. Empty skips
	// the check (settle api and settle dev always set it).
	Treasury string
	// CodeChecker, if set, refuses calldata to a destination without
	// contract code (merchant calldata is executed against the destination
	// by the executor contract; against an address without code it does
	// nothing). Nil skips the check.
	CodeChecker CodeChecker
	// ReceiverCreated, if set, is called after a new receiver is committed
	// (the ClickHouse mirror uses it to copy the row promptly).
	ReceiverCreated func()
	// TxHint, if set, looks up a payer's transaction hint (PUT check with
	// a txHash) on chain and attributes it at once.
	TxHint func(ctx context.Context, sessionID, txHash string) error
	// TxHintBurst and TxHintEvery bound TxHint per session: a burst of
	// TxHintBurst lookups (default 3), then one per TxHintEvery (default
	// 5s). Checks over the budget answer as if no hint had been sent.
	TxHintBurst int
	TxHintEvery time.Duration
	// Ready lists dependency checks for /readyz, by name.
	Ready map[string]func(context.Context) error
	// Fiat, if set, enables the fiat payment method through this onramp;
	// nil answers payment_method_not_enabled.
	Fiat FiatProvider
	// Mount serves extra handlers on the public listener by ServeMux
	// pattern (the sandbox onramp's hosted page under settle dev).
	Mount map[string]http.Handler
	// PublicURL is the base URL payers reach this server at (api.public_url,
	// e.g. https://pay.example.com), for the checkout page links the create
	// calls return; default http:// plus the listen address.
	PublicURL string
	// SessionTTL is how long a new session stays open; default one hour.
	SessionTTL time.Duration
	Logger     *slog.Logger
	// Registerer takes the API's metrics; nil uses a private registry.
	Registerer prometheus.Registerer
	// Now is the clock; tests set it to control expiry.
	Now func() time.Time
	// Exceptions, if set, serves the exceptions inbox (/v1/exceptions,
	// api/exceptions.go); nil leaves it out.
	Exceptions ExceptionStore
	// Events, if set, serves the event log (/v1/events, api/events.go);
	// nil leaves it out.
	Events EventStore
	// Webhooks, if set, serves the webhook endpoints (/v1/webhooks,
	// api/webhooks.go); nil leaves them out.
	Webhooks WebhookStore
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	treasury string // cfg.Treasury, lowercase
	// publicURL is cfg.PublicURL without a trailing slash.
	publicURL string
	logger    *slog.Logger
	metrics   *metrics
	hints     *hintLimiter
	mux       *http.ServeMux
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Chains == nil || cfg.Store == nil || cfg.EVMReceivers == nil {
		return nil, errors.New("api: Chains, Store and EVMReceivers are required")
	}
	var treasury string
	if cfg.Treasury != "" {
		if _, err := chain.ParseEVMAddress(cfg.Treasury); err != nil {
			return nil, fmt.Errorf("api: Treasury: %w", err)
		}
		treasury = strings.ToLower(cfg.Treasury)
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("api: PublicURL %q must be an absolute http(s) URL without query or fragment", cfg.PublicURL)
		}
	}
	cfg.SessionTTL = cmp.Or(cfg.SessionTTL, time.Hour)
	cfg.TxHintBurst = cmp.Or(cfg.TxHintBurst, 3)
	cfg.TxHintEvery = cmp.Or(cfg.TxHintEvery, 5*time.Second)
	if cfg.TxHintBurst < 0 || cfg.TxHintEvery < 0 {
		return nil, errors.New("api: TxHintBurst and TxHintEvery must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	base := cfg.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		treasury:  treasury,
		publicURL: strings.TrimRight(cfg.PublicURL, "/"),
		logger:    slog.New(logHandler{base.Handler()}).With("component", "api"),
		metrics:   newMetrics(cfg.Registerer),
		hints:     newHintLimiter(cfg.TxHintEvery, cfg.TxHintBurst),
		mux:       http.NewServeMux(),
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	handle := func(pattern string, h handlerFunc) { s.mux.Handle(pattern, s.route(pattern, h)) }
	handle("POST /v1/sessions", s.idempotent(s.merchantScope(s.merchantFromKey), s.createSession))
	handle("GET /v1/sessions", s.listSessions)
	handle("GET /v1/sessions/{id}", cors(s.getSession))
	handle("OPTIONS /v1/sessions/{id}", preflight("GET"))
	handle("POST /v1/sessions/{id}/paymentMethods", cors(s.idempotent(sessionScope, s.createPaymentMethod)))
	handle("OPTIONS /v1/sessions/{id}/paymentMethods", preflight("POST"))
	handle("PUT /v1/sessions/{id}/check", cors(s.checkSession))
	handle("OPTIONS /v1/sessions/{id}/check", preflight("PUT"))
	// Method-less patterns catch the other methods on known paths, so a
	// wrong method gets a 405 in the error envelope, not ServeMux's text.
	handle("POST /api/payment", s.idempotent(s.merchantScope(s.merchantFromPaymentsKey), s.createPayment))
	handle("GET /api/payment/{id}", s.getPayment)
	handle("GET /api/payment/external-id/{externalId}", s.getPaymentByExternalID)
	handle("GET /api/payments", s.listPayments)
	handle("GET /checkout", s.checkoutPageHandler)
	handle("POST /checkout/select", s.checkoutSelect)
	handle("POST /checkout/fiat", s.checkoutFiat)
	handle("GET /checkout/status", s.checkoutStatus)
	handle("GET /checkout/assets/{name}", s.checkoutAsset)
	// Browsers ask for it on every page; an empty answer keeps a 404 out
	// of the payer's console.
	handle("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	for _, p := range []string{"/v1/sessions", "/v1/sessions/{id}", "/v1/sessions/{id}/paymentMethods", "/v1/sessions/{id}/check",
		"/api/payment", "/api/payment/{id}", "/api/payment/external-id/{externalId}", "/api/payments"} {
		handle(p, methodNotAllowed)
	}
	s.exceptionRoutes(handle)
	s.eventRoutes(handle)
	s.webhookRoutes(handle)
	for pattern, h := range s.cfg.Mount {
		s.mux.Handle(pattern, h)
	}
	handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	handle("GET /readyz", s.readyz)
	// No /metrics here: this listener is public (often 0.0.0.0), and the
	// metrics name routes, chains and volumes. They have their own listener.
	handle("/", func(w http.ResponseWriter, r *http.Request) error {
		return &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "not_found", Message: "No such endpoint: " + r.Method + " " + r.URL.Path}
	})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	return &Error{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: "method_not_allowed", Message: "Method " + r.Method + " is not allowed on " + r.URL.Path + "."}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	out := map[string]string{}
	ok := true
	for name, check := range s.cfg.Ready {
		if err := check(ctx); err != nil {
			s.logger.WarnContext(ctx, "readiness check failed", "check", name, "err", err)
			out[name], ok = "unavailable", false
			continue
		}
		out[name] = "ok"
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, out)
	return nil
}

// pruneIdempotencyKeys deletes stored responses past their 24 hours, hourly,
// until ctx is done. Any number of API processes may do it at once.
func (s *Server) pruneIdempotencyKeys(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := s.cfg.Store.PruneIdempotencyKeys(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "pruning idempotency keys failed; will retry", "err", err)
		} else if n > 0 {
			s.logger.InfoContext(ctx, "pruned idempotency keys", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Handler returns the API's root handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Run serves on ln until ctx is done, then shuts down gracefully, giving
// in-flight requests up to 10 seconds.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	go s.pruneIdempotencyKeys(ctx)
	s.logger.InfoContext(ctx, "api listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving api: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down api: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving api: %w", err)
	}
	return nil
}
