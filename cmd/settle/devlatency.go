package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
)

// cmdDevLatency measures, on the running dev stack, how long a deposit
// takes from its block's timestamp to the session reading processing and
// then succeeded through the API. Sessions are paid one after another on the
// first dev chain and delivered on the second.
func cmdDevLatency(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("SETTLE_CONFIG"), "config file (YAML)")
	n := fs.Int("n", 20, "sessions to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, true)
	if err != nil {
		return err
	}
	if len(cfg.Chains) < 2 {
		return fmt.Errorf("dev latency needs two EVM chains in the config")
	}
	src, dst := cfg.Chains[0], cfg.Chains[1]
	raw, err := os.ReadFile(filepath.Join(cmpOr(os.Getenv("SETTLE_DEV_DIR"), filepath.Join(".local", "dev")), "demo-api-key"))
	if err != nil {
		return fmt.Errorf("reading the demo key (is `make dev` running?): %w", err)
	}
	api := &apiClient{base: "http://" + cfg.API.Listen, key: strings.TrimSpace(string(raw))}
	client, err := ethclient.DialContext(ctx, src.RPCURL)
	if err != nil {
		return err
	}
	defer client.Close()

	var toProcessing, toSucceeded []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, *n)
	for i := range *n {
		body := map[string]any{
			"destination": map[string]any{"type": "evm", "address": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
				"chainId": dst.ID, "tokenAddress": dst.Tokens[0].Address, "amountUnits": "1.00"},
			"display": map[string]any{"title": fmt.Sprintf("latency %d", i), "verb": "Deposit"},
		}
		out, err := api.call(ctx, "POST", "/v1/sessions", body, "Bearer")
		if err != nil {
			return err
		}
		s := out["session"].(map[string]any)
		id := s["sessionId"].(string)
		recv, err := api.setEVM(ctx, id, s["clientSecret"].(string))
		if err != nil {
			return err
		}
		hash, err := sendTransfer(ctx, client, common.HexToAddress(src.Tokens[0].Address), common.HexToAddress(recv), big.NewInt(1_000_000))
		if err != nil {
			return err
		}
		receipt, err := client.TransactionReceipt(ctx, hash)
		if err != nil {
			return err
		}
		header, err := client.HeaderByHash(ctx, receipt.BlockHash)
		if err != nil {
			return err
		}
		blockTime := time.Unix(int64(header.Time), 0)
		wg.Go(func() {
			var processing time.Time
			deadline := time.Now().Add(3 * time.Minute)
			for time.Now().Before(deadline) {
				sess, err := api.session(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				switch sess["status"] {
				case "processing":
					if processing.IsZero() {
						processing = time.Now()
					}
				case "succeeded":
					now := time.Now()
					if processing.IsZero() {
						processing = now
					}
					mu.Lock()
					toProcessing = append(toProcessing, processing.Sub(blockTime))
					toSucceeded = append(toSucceeded, now.Sub(blockTime))
					mu.Unlock()
					return
				case "bounced", "expired":
					errs <- fmt.Errorf("session %s ended %v", id, sess["status"])
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			errs <- fmt.Errorf("session %s did not succeed in 3 minutes", id)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1)+0.5)].Round(10 * time.Millisecond) }
		fmt.Fprintf(stdout, "%-22s p50 %-8s p99 %-8s max %s\n", name, q(0.5), q(0.99), d[len(d)-1].Round(10*time.Millisecond))
	}
	fmt.Fprintf(stdout, "%d sessions, deposit on %s, delivery on %s (block timestamps have 1s resolution)\n", *n, src.Name, dst.Name)
	report("block → processing", toProcessing)
	report("block → succeeded", toSucceeded)
	return nil
}
