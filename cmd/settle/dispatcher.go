package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/webhook"
)

// webhookPolicy is the SSRF guard's policy from the config.
func (c *fileConfig) webhookPolicy() webhook.Policy {
	return webhook.Policy{AllowLoopback: c.Webhooks.AllowLoopback}
}

// dispatcherGroup adds the webhook dispatcher to g.
func dispatcherGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) error {
	d, err := webhook.NewDispatcher(webhook.Config{Postgres: pg, Policy: cfg.webhookPolicy(), Workers: cfg.Webhooks.Workers, Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	g.Go(func() error { return d.Run(ctx) })
	return nil
}

// cmdDispatcher is `settle dispatcher`: the webhook dispatcher, with its
// /metrics on webhooks.metrics_listen. Run as many as you like.
func cmdDispatcher(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := commonFlags("dispatcher", args, stderr, false, nil)
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, cfg, stderr, false)
	if err != nil {
		return err
	}
	defer d.Close()
	if cfg.Webhooks.AllowLoopback {
		d.logger.Warn("webhooks.allow_loopback is on: webhooks may reach this host's loopback services; it is meant for settle dev and tests only")
	}
	reg := newRegistry()
	g, gctx := errgroup.WithContext(ctx)
	if _, err := metricsGroup(gctx, g, cfg.Webhooks.MetricsListen, reg, d.logger); err != nil {
		return err
	}
	if err := dispatcherGroup(gctx, g, cfg, d.pg, d.logger, reg); err != nil {
		return err
	}
	return g.Wait()
}

// devWebhookGroup runs settle dev's own webhook receiver on
// dev.webhook_listen, registered as an endpoint of the demo merchant, and
// prints every event it receives with its signature's verdict, so a
// newcomer sees what a merchant's server would get.
func devWebhookGroup(ctx context.Context, g *errgroup.Group, cfg *fileConfig, pg *pgxpool.Pool, apiKey string, out io.Writer, logger *slog.Logger) error {
	merchant, err := store.New(pg).MerchantByAPIKey(ctx, apiKey)
	if err != nil {
		return fmt.Errorf("finding the demo merchant: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Dev.WebhookListen)
	if err != nil {
		return fmt.Errorf("listening for dev webhooks: %w", err)
	}
	ws := webhook.NewStore(pg, cfg.webhookPolicy())
	e, err := ws.DevEndpoint(ctx, merchant, "http://"+ln.Addr().String()+"/webhooks")
	if err != nil {
		ln.Close()
		return err
	}
	var mu sync.Mutex // guards e (a rotation reloads it) and the console
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		verdict := "signature ok"
		if err := webhook.Verify(e.Secret, body, r.Header); err != nil {
			// The merchant may have rotated the secret through the API.
			if cur, rerr := ws.DevEndpoint(ctx, merchant, e.URL); rerr == nil && webhook.Verify(cur.Secret, body, r.Header) == nil {
				e = cur
			} else {
				verdict = "SIGNATURE INVALID: " + err.Error()
			}
		}
		fmt.Fprintln(out, describeEvent(body, verdict))
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving dev webhooks: %w", err)
		}
		return nil
	})
	logger.Info("dev webhook receiver listening", "url", e.URL, "endpoint", e.ID)
	fmt.Fprintf(out, "webhook  the demo merchant's events go to %s (endpoint %s) and are printed here\n", e.URL, e.ID)
	return nil
}

// describeEvent is one console line for a received event.
func describeEvent(body []byte, verdict string) string {
	var ev struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Sequence int64  `json:"sequence"`
		Test     bool   `json:"isTestEvent"`
		Data     struct {
			Object map[string]any `json:"object"`
		} `json:"data"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&ev); err != nil {
		return "webhook  (not an event body: " + err.Error() + ")  " + verdict
	}
	subject := ""
	for _, k := range []string{"sessionId", "id", "paymentId"} {
		if s, ok := ev.Data.Object[k].(string); ok && s != "" {
			subject = s
			break
		}
	}
	test := ""
	if ev.Test {
		test = "  (test)"
	}
	return fmt.Sprintf("webhook  %-24s %s  seq %d  %s  %s%s", ev.Type, subject, ev.Sequence, ev.ID, verdict, test)
}
