package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkSessionsAPI drives the API over real HTTP, Postgres and all, with
// concurrent clients, and reports latency percentiles and throughput. The
// healthz case is the ceiling of the same HTTP stack with no database work,
// measured in the same run: compare ratios, not absolute numbers, across
// machines.
//
//	make bench-api
func BenchmarkSessionsAPI(b *testing.B) {
	s := setup(b)
	id, _ := s.create(s.key)
	createBody, _ := json.Marshal(validCreate())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	cases := []struct {
		name string
		req  func() *http.Request
		want int
	}{
		{"healthz", func() *http.Request {
			r, _ := http.NewRequest("GET", s.url+"/healthz", nil)
			return r
		}, 200},
		{"create", func() *http.Request {
			r, _ := http.NewRequest("POST", s.url+"/v1/sessions", bytes.NewReader(createBody))
			r.Header.Set("Authorization", "Bearer "+s.key)
			r.Header.Set("Content-Type", "application/json")
			return r
		}, 201},
		{"get", func() *http.Request {
			r, _ := http.NewRequest("GET", s.url+"/v1/sessions/"+id, nil)
			r.Header.Set("Authorization", "Bearer "+s.key)
			return r
		}, 200},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(8) // 8 × GOMAXPROCS clients
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					resp, err := client.Do(c.req())
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != c.want {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			if len(lat) == 0 {
				return
			}
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
		})
	}
}
