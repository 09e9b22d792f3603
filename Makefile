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
FUZZTIME ?= 10s

.PHONY: all build dev test test-go fuzz bench bench-api lint fmt services services-down clean

all: build

build:
	$(GO) build -o bin/settle ./cmd/settle

## dev: databases, migrations, the API and the reconciler, a demo merchant key
dev: build services
	./bin/settle dev

## test: start the local databases, vet, then every test with the race detector, then short fuzz runs
test: services
	$(MAKE) --no-print-directory test-go fuzz

test-go:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.local/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(WITH_SERVICES) $(GO) test -race -count=1 ./...

## fuzz: run each fuzz target briefly (FUZZTIME, default 10s); the seed corpora also run in every `go test`
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseUnits$$' -fuzztime=$(FUZZTIME) ./internal/chain
	$(GO) test -run='^$$' -fuzz='^FuzzParseEVMAddress$$' -fuzztime=$(FUZZTIME) ./internal/chain

## bench: every benchmark; figures are printed, nothing fails on timing
bench: bench-api

bench-api: services
	$(WITH_SERVICES) $(GO) test -run='^$$' -bench=BenchmarkSessionsAPI -benchtime=5s ./api

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
	rm -rf bin
