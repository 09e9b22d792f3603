// Package anviltest starts anvil chains for tests in other packages.
package anviltest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
)

// Start runs an anvil node for the test and stops it when the test ends.
// Without the anvil binary the test is skipped, except under CI=true, where
// a skip would hide a broken setup: there it fails.
func Start(tb testing.TB, cfg anvil.Config) *anvil.Node {
	tb.Helper()
	bin, err := anvil.FindBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	cfg.Binary = bin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := anvil.Start(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	return n
}
