package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
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
		b.Run(c.name, func(b *testing.B) { loadRun(b, client, c.req, c.want) })
	}
}

// loadRun sends req from 8 × GOMAXPROCS concurrent clients and reports
// latency percentiles and throughput.
func loadRun(b *testing.B, client *http.Client, req func() *http.Request, want int) {
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			resp, err := client.Do(req())
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Errorf("status %d, want %d", resp.StatusCode, want)
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
}

// BenchmarkPaymentsAPI is BenchmarkSessionsAPI for the Payments API and
// the checkout page: create (a new externalId each time), a repeated
// externalId (answered with the existing payment), get, and the page's
// first render before and after the payer picks a token (the second draws
// the receiver's QR code), each beside healthz in the same run.
//
//	make bench-api
func BenchmarkPaymentsAPI(b *testing.B) {
	s := setup(b)
	first := s.do("POST", "/api/payment", validPayment(), s.apiKey(s.key)...)
	if first.Status != 200 {
		b.Fatalf("create: %d %s", first.Status, first.Raw)
	}
	id := first.Body["id"].(string)
	picked := s.do("POST", "/api/payment", set(validPayment(), "externalId", "picked"), s.apiKey(s.key)...)
	pickedID := picked.Body["id"].(string)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(s.url+"/checkout/select", url.Values{"id": {pickedID}, "pay": {"8453:" + baseUSDC}})
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("choosing a token: %v %v", resp, err)
	}
	resp.Body.Close()
	pickedPage := resp.Header.Get("Location")
	repeat, _ := json.Marshal(validPayment())
	var n atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(body []byte) *http.Request {
		r, _ := http.NewRequest("POST", s.url+"/api/payment", bytes.NewReader(body))
		r.Header.Set("Api-Key", s.key)
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	get := func(path string, auth bool) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest("GET", s.url+path, nil)
			if auth {
				r.Header.Set("Api-Key", s.key)
			}
			return r
		}
	}
	cases := []struct {
		name string
		req  func() *http.Request
		want int
	}{
		{"healthz", get("/healthz", false), 200},
		{"create", func() *http.Request {
			body, _ := json.Marshal(set(validPayment(), "externalId", fmt.Sprintf("bench-%d", n.Add(1))))
			return post(body)
		}, 200},
		{"create-existing-externalId", func() *http.Request { return post(repeat) }, 200},
		{"get", get("/api/payment/"+id, true), 200},
		{"checkout-page", get("/checkout?id="+id, false), 200},
		{"checkout-page-with-receiver", get(pickedPage, false), 200},
		{"checkout-status", get("/checkout/status?id="+pickedID, false), 200},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { loadRun(b, client, c.req, c.want) })
	}
}
