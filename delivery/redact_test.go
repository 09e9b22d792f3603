package delivery

import (
	"bytes"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/settle-dev/settle/internal/redact"
)

// An RPC URL carries the provider's API key (…/v2/KEY); go-ethereum's
// errors quote the URL (`Post "https://…/v2/KEY": EOF`) and a node's
// answer may echo the path. Neither may reach payouts.error or
// sweeps.error, where operators and `settle payouts list` read them; the
// host stays, so an SRE can tell which provider failed.
func TestStoredErrorsCarryNoRPCSecret(t *testing.T) {
	t.Parallel()
	const secret = "k3y0fTheRPCPr0vider5ecret"
	for _, c := range []struct {
		name string
		fail http.HandlerFunc
		// configured: the executor knows the URL (as settle delivery
		// does), so the secret is removed even outside a URL.
		configured bool
	}{{
		name: "connection closed",
		fail: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		},
	}, {
		name: "500 echoing the path",
		fail: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no route for "+r.Method+" "+r.URL.Path, http.StatusInternalServerError)
		},
		configured: true,
	}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			// The provider: anvil behind a secret path, failing gas
			// estimates (a payout's and a sweep's first node call that
			// can fail on its own).
			node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err != nil || !strings.HasSuffix(r.URL.Path, "/v2/"+secret) {
					http.Error(w, "unknown key", http.StatusUnauthorized)
					return
				}
				if bytes.Contains(body, []byte(`"eth_estimateGas"`)) {
					c.fail(w, r)
					return
				}
				resp, err := http.Post(f.node.URL(), "application/json", bytes.NewReader(body))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
				defer resp.Body.Close()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(resp.StatusCode)
				io.Copy(w, resp.Body) //nolint:errcheck // the client sees a short answer
			}))
			t.Cleanup(node.Close)
			url := node.URL + "/v2/" + secret
			client, err := ethclient.DialContext(f.ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(client.Close)
			e, _ := f.executor(func(cfg *Config) {
				cfg.Chains = map[uint64]ChainClient{f.node.ChainID(): client}
				cfg.ReceiverKey = f.master.PrivateKey
				cfg.SweepMin = map[uint64]map[common.Address]*big.Int{f.node.ChainID(): {f.token: big.NewInt(10_000_000)}}
				if c.configured {
					cfg.Redact = redact.New(url)
				}
			})
			id := f.addPayout(randomAddress(t), 1_000_000, nil)
			_, rid := f.addReceiver(3, dep{20_000_000, "final", true})
			if _, err := e.RunOnce(f.ctx); err != nil {
				t.Fatal(err)
			}
			var sweepErr *string
			if err := f.db.PG.QueryRow(f.ctx, `SELECT error FROM sweeps WHERE receiver_id = $1`, rid).Scan(&sweepErr); err != nil {
				t.Fatalf("reading the sweep: %v", err)
			}
			host := strings.TrimPrefix(node.URL, "http://")
			for what, stored := range map[string]*string{"payouts.error": f.payout(id).Error, "sweeps.error": sweepErr} {
				if stored == nil {
					t.Errorf("%s is empty, want the node's failure", what)
					continue
				}
				if strings.Contains(*stored, secret) {
					t.Errorf("%s carries the RPC secret: %s", what, *stored)
				}
				if !c.configured && !strings.Contains(*stored, host) {
					t.Errorf("%s lost the node's host %s: %s", what, host, *stored)
				}
				t.Logf("%s: %s", what, *stored)
			}
		})
	}
}
