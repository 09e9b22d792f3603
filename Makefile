# settle: two commands set everything up on a fresh machine:
#   make dev    run the whole system locally
#   make test   run every test (installs and starts what it needs)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
SERVICES := scripts/services.sh
# Load the local database URLs into the environment of a recipe line.
WITH_SERVICES := eval "$$($(SERVICES) env)" &&
# An execution count, not a duration: a wall-clock -fuzztime races the fuzz
# coordinator's own deadline on a busy machine and fails with a bare "context
# deadline exceeded" and no failing input (golang/go#51484, #75804).
FUZZTIME ?= 50000x

.PHONY: all build dev dev-clean test test-go test-faults fuzz bench bench-api bench-indexer bench-webhook bench-events bench-lists contracts lint fmt services services-down clean screenshots

all: build

build:
	$(GO) build -o bin/settle ./cmd/settle

## dev: databases, local chains, migrations, API, indexers, reconciler, a demo merchant key
dev: build services node_modules
	./bin/settle dev

## dev-clean: forget the dev chains, databases and demo key (the next `make dev` starts afresh)
dev-clean:
	rm -rf .local/dev
	-$(WITH_SERVICES) psql "$$SETTLE_POSTGRES_URL" -qc 'DROP DATABASE IF EXISTS settle_dev WITH (FORCE)'
	-clickhouse-client --port $${SETTLE_CH_PORT:-19000} -q 'DROP DATABASE IF EXISTS settle_dev'

## node_modules: anvil and solc-js from npm, exactly as package-lock.json pins them
node_modules: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@touch node_modules

## contracts: recompile contracts/*.sol into internal/anvil/contracts (committed)
contracts: node_modules
	scripts/compile-contracts.sh

## test: start the local databases, vet, then every test with the race detector, then short fuzz runs
test: services node_modules
	scripts/chromium.sh install
	$(MAKE) --no-print-directory test-go fuzz

test-go:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.local/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(WITH_SERVICES) $(GO) test -race -count=1 -timeout=40m ./...

## test-faults: the randomized fault suite at full length (FAULT_SCHEDULES, default 200; replay one with SETTLE_FAULT_REPLAY=SEED); `make test` runs 20
FAULT_SCHEDULES ?= 200
test-faults: services node_modules
	$(WITH_SERVICES) SETTLE_FAULT_SCHEDULES=$(FAULT_SCHEDULES) SETTLE_FAULT_KEEP_GOING=1 \
		$(GO) test -count=1 -run='^TestFaultSchedules$$' -timeout=300m -v ./e2e 2>&1 | grep -E '^(=== RUN|--- |    faults_test.go:.*(schedule|fault suite|broke)|ok|FAIL|PASS)|^\s{6,}'

## screenshots: PNGs of the checkout page's states (docs/screenshots), from the browser e2e tests
screenshots: services node_modules
	scripts/chromium.sh install
	mkdir -p docs/screenshots
	$(WITH_SERVICES) SETTLE_SCREENSHOTS=$(abspath docs/screenshots) \
		$(GO) test -count=1 -run='^TestCheckout.*InBrowser$$' -timeout=15m ./e2e

## fuzz: run each fuzz target briefly (FUZZTIME, default 50000 executions each); the seed corpora also run in every `go test`
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseUnits$$' -fuzztime=$(FUZZTIME) ./internal/chain
	$(GO) test -run='^$$' -fuzz='^FuzzParseEVMAddress$$' -fuzztime=$(FUZZTIME) ./internal/chain
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeLogsResponse$$' -fuzztime=$(FUZZTIME) ./indexer/evm
	$(GO) test -run='^$$' -fuzz='^FuzzUint256Decimal$$' -fuzztime=$(FUZZTIME) ./indexer/evm

## bench: every benchmark; figures are printed, nothing fails on timing
bench: bench-api bench-indexer bench-webhook bench-events bench-exceptions bench-lists

## bench-exceptions: a page of GET /v1/exceptions's query at 1,000 and 1,000,000 exceptions (SETTLE_BENCH_EXCEPTIONS for another size)
bench-exceptions: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench='^BenchmarkListExceptions$$' -benchtime=2s -timeout=30m ./internal/store

## bench-events: the event log's write cost and GET /v1/events's query at 1,000 and 1,000,000 events (SETTLE_BENCH_EVENTS=10000000 for 10M)
bench-events: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench='^Benchmark(EventWrite|ListEvents)$$' -benchtime=300x -timeout=60m ./internal/store

## bench-webhook: event latency (state change → received, p50/p99, at the default and the former 100 ms poll) and dispatcher throughput (events/s) against a local HTTPS receiver
bench-webhook: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench='^BenchmarkEventLatency$$' -benchtime=300x ./webhook
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench='^BenchmarkDispatcherThroughput$$' -benchtime=10000x ./webhook

## bench-lists: a page of GET /v1/sessions's queries (first page, deep cursor, each filter) at 1,000 and 10,000,000 sessions, and the ratio (SETTLE_BENCH_LIST_N for another size; the seeded databases are kept, SETTLE_BENCH_LIST_FRESH=1 seeds again)
bench-lists: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -v -bench='^BenchmarkListSessions$$' -benchtime=200x -timeout=60m ./internal/store

bench-api: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench='^Benchmark(Sessions|Payments)API$$' -benchtime=5s ./api

## bench-indexer: settle's indexer beside Shovel (SETTLE_BENCH_SHOVEL) on the peer-baseline history (300,001 transfers); see indexer/evm/bench_test.go
bench-indexer: services node_modules
	$(WITH_SERVICES) SETTLE_BENCH_SHOVEL="$${SETTLE_BENCH_SHOVEL:-$(abspath ../shared/peers/shovel/shovel)}" \
		$(GO) test -v -run='^$$' -bench=BenchmarkBackfill -benchtime=1x -timeout=60m ./indexer/evm

lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## services: install (if missing) and start Postgres and ClickHouse on loopback
services:
	$(SERVICES) up

services-down:
	$(SERVICES) down

clean:
	rm -rf bin node_modules
