// Command settle runs settle's components: the HTTP API, the reconciler,
// migrations, admin commands, and `settle dev`, the whole system on one
// machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/settle-dev/settle/internal/redact"
)

const usage = `settle: stablecoin deposit backend

Usage:
  settle migrate     [-config FILE]              apply Postgres and ClickHouse migrations
  settle api         [-config FILE]              serve the HTTP API (/metrics on api.metrics_listen)
  settle reconciler  [-config FILE]              attribute deposits, settle sessions, expire, write the ledger
  settle delivery    [-config FILE]              sign and send deliveries and refunds (needs the master seed)
  settle dispatcher  [-config FILE]              send webhooks: fan out events, sign, retry (any number may run)
  settle delivery deploy -chain NAME [-config FILE]  deploy the treasury's SettleExecutor on a chain (prints its executor_address)
  settle indexer -chain NAME [-config FILE]      index one chain's token transfers into ClickHouse
  settle dev         [-config FILE]              run everything locally with a demo merchant
  settle dev pay [-chain NAME] SESSION_ID AMOUNT send a dev payer's deposit and follow the session
  settle dev latency [-n 20]                     measure block→processing and block→succeeded on the dev stack
  settle merchant create -name NAME [-config FILE]   create a merchant and its first API key
  settle apikey create -merchant ID [-config FILE]   create another API key for a merchant
  settle apikey revoke -id KEY_ID [-config FILE]     revoke an API key (it is refused at once)
  settle payouts list [-config FILE]             list the payouts that need an operator, and why
  settle payouts retry -id N -note TEXT [-operator NAME] [-config FILE]
                                                 hand a parked payout back to the executor (recorded in the ledger)
  settle payouts abandon -id N -note TEXT [-operator NAME] [-config FILE]
                                                 take a parked payout out of settle's hands; its session is settled by hand
  settle webhook add -merchant ID -url URL [-events a,b] [-description TEXT] [-config FILE]
                                                 register a webhook endpoint for a merchant (prints its secret once)
  settle webhook list -merchant ID [-secrets] [-config FILE]   list a merchant's webhook endpoints
  settle webhook rm -id ID [-config FILE]        delete a webhook endpoint with its deliveries
  settle keys new                                generate a master seed and its receiver xpub
  settle probe URL                               exit 0 if URL answers 2xx (container healthchecks)

The config file may also come from SETTLE_CONFIG; environment variables
override its fields (see README.md).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		// An error may quote an RPC URL (a dial or a node that failed).
		fmt.Fprintln(os.Stderr, "settle:", redact.Text(err.Error()))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmd, args := args[0], args[1:]
	if (cmd == "merchant" || cmd == "apikey" || cmd == "keys" || cmd == "payouts" || cmd == "webhook" || cmd == "dev" && len(args) > 0 && (args[0] == "pay" || args[0] == "latency")) && len(args) > 0 {
		cmd, args = cmd+" "+args[0], args[1:]
	}
	switch cmd {
	case "migrate":
		return cmdMigrate(ctx, args, stderr)
	case "api":
		return cmdAPI(ctx, args, stderr)
	case "reconciler":
		return cmdReconciler(ctx, args, stderr)
	case "indexer":
		return cmdIndexer(ctx, args, stderr)
	case "delivery":
		return cmdDelivery(ctx, args, stdout, stderr)
	case "dispatcher":
		return cmdDispatcher(ctx, args, stderr)
	case "webhook add":
		return cmdWebhookAdd(ctx, args, stdout, stderr)
	case "webhook list":
		return cmdWebhookList(ctx, args, stdout, stderr)
	case "webhook rm":
		return cmdWebhookRm(ctx, args, stdout, stderr)
	case "dev":
		return cmdDev(ctx, args, stdout, stderr)
	case "dev pay":
		return cmdDevPay(ctx, args, stdout, stderr)
	case "dev latency":
		return cmdDevLatency(ctx, args, stdout, stderr)
	case "merchant create":
		return cmdMerchantCreate(ctx, args, stdout, stderr)
	case "apikey create":
		return cmdAPIKeyCreate(ctx, args, stdout, stderr)
	case "apikey revoke":
		return cmdAPIKeyRevoke(ctx, args, stdout, stderr)
	case "payouts list":
		return cmdPayoutsList(ctx, args, stdout, stderr)
	case "payouts retry":
		return cmdPayoutsAct(ctx, "retry", args, stdout, stderr)
	case "payouts abandon":
		return cmdPayoutsAct(ctx, "abandon", args, stdout, stderr)
	case "keys new":
		return cmdKeysNew(stdout)
	case "probe":
		return cmdProbe(ctx, args)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// commonFlags parses -config and returns the loaded configuration.
func commonFlags(name string, args []string, stderr io.Writer, dev bool, extra func(*flag.FlagSet)) (*fileConfig, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("SETTLE_CONFIG"), "config file (YAML)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}
	return loadConfig(*path, dev)
}

// newLogger builds the process's logger. Every line goes through
// rpcRedactor: an RPC URL (or an error quoting one) never reaches the logs
// with its API key.
func newLogger(cfg *fileConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if cfg.LogLevel != "" {
		if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(cfg.LogFormat) {
	case "", "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want json or text", cfg.LogFormat)
	}
	return slog.New(redact.NewHandler(h, rpcRedactor(cfg))), nil
}

// cmdProbe is a healthcheck for images without curl.
func cmdProbe(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("probe: want exactly one URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe: %s answered %s", args[0], resp.Status)
	}
	return nil
}
