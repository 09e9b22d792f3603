package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// BenchmarkEventWrite is what the event log adds to a change: a session
// created with its session.created event, and RecordEvent alone (read
// the session, render, draw the sequence, insert) in a transaction.
//
//	go test -run '^$' -bench BenchmarkEventWrite -benchtime 2000x ./internal/store
func BenchmarkEventWrite(b *testing.B) {
	ctx := context.Background()
	pg := dbtest.Migrated(b).PG
	st := store.New(pg)
	m, err := st.CreateMerchant(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	n := 0
	newSession := func() *session.Session {
		n++
		return &session.Session{
			ID: fmt.Sprintf("%032x", n), MerchantID: m.ID, Status: session.RequiresPaymentMethod,
			Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
				ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC", AmountUnits: "1"},
			Display: session.Display{Title: "t", Verb: "Deposit"}, ClientSecret: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		}
	}
	b.Run("CreateSession", func(b *testing.B) {
		for b.Loop() {
			if err := st.CreateSession(ctx, newSession(), 6); err != nil {
				b.Fatal(err)
			}
		}
	})
	ss := newSession()
	if err := st.CreateSession(ctx, ss, 6); err != nil {
		b.Fatal(err)
	}
	b.Run("RecordEvent", func(b *testing.B) {
		for b.Loop() {
			err := pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
				_, err := store.RecordEvent(ctx, tx, store.Change{SessionID: ss.ID})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkListEvents pages a large merchant's events (a tenth of the
// log; the rest is 1,000 other merchants) at two log sizes: first page,
// a page deep into the log by cursor, and the type and subject filters.
// The cost must not grow with the log. SETTLE_BENCH_EVENTS sets the
// large size (default 1,000,000; 10,000,000 takes a few minutes to seed).
//
//	go test -run '^$' -bench BenchmarkListEvents -benchtime 200x ./internal/store
func BenchmarkListEvents(b *testing.B) {
	large := 1_000_000
	if v := os.Getenv("SETTLE_BENCH_EVENTS"); v != "" {
		var err error
		if large, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	for _, size := range []int{1_000, large} {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			ctx := context.Background()
			pg := dbtest.Migrated(b).PG
			st := store.New(pg)
			seed := []string{
				`INSERT INTO merchants (id, name) SELECT 'mer_o' || g, 'o' FROM generate_series(0, 999) g`,
				`INSERT INTO merchants (id, name) VALUES ('mer_big', 'big')`,
				// Event g was written g seconds before 2026-01-01; every
				// tenth is the big merchant's, of subject g/10 % 5000.
				`INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, payload, created_at, delivered_at)
				 SELECT 'evt_' || g, CASE WHEN g % 10 = 0 THEN 'mer_big' ELSE 'mer_o' || (g % 1000) END,
				        CASE WHEN g % 7 = 0 THEN 'session.succeeded' ELSE 'session.created' END,
				        'sub' || (g / 10 % 5000), g, jsonb_build_object('id', 'evt_' || g, 'data', jsonb_build_object('object', jsonb_build_object('n', g))),
				        timestamptz '2026-01-01' - g * interval '1 second', now()
				 FROM generate_series(1, $1::int) g`,
				`ANALYZE outbox`,
			}
			for i, q := range seed {
				var err error
				if i == 2 {
					_, err = pg.Exec(ctx, q, size)
				} else {
					_, err = pg.Exec(ctx, q)
				}
				if err != nil {
					b.Fatalf("seeding: %v", err)
				}
			}
			deep := fmt.Sprintf("evt_%d", size/2/10*10) // the big merchant's, halfway down
			for _, tc := range []struct {
				name string
				q    store.EventQuery
			}{
				{"first", store.EventQuery{}},
				{"deep", store.EventQuery{StartingAfter: deep}},
				{"type", store.EventQuery{Type: "session.succeeded"}},
				{"subject", store.EventQuery{Subject: "sub42"}},
			} {
				b.Run(tc.name, func(b *testing.B) {
					q := tc.q
					q.MerchantID, q.Limit = "mer_big", 21
					for b.Loop() {
						evs, err := st.ListEvents(ctx, q)
						if err != nil {
							b.Fatal(err)
						}
						if len(evs) == 0 {
							b.Fatal("empty page")
						}
					}
				})
			}
		})
	}
}
