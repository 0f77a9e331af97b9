# Every target has a "## help" comment; `make help` lists them.
GO ?= go
PKGS := ./...

.PHONY: help run build test vet fuzz bench soak lint

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

run: ## run the relay in dev mode (generated key, 127.0.0.1:8080, prints tokens)
	$(GO) run ./cmd/realtime serve --dev

build: ## build bin/realtime
	$(GO) build -o bin/realtime ./cmd/realtime

# The short fuzz runs count executions (a few seconds each here) instead of
# a duration: with -fuzztime 5s, go1.26's fuzz coordinator can fail a run
# with a bare "context deadline exceeded" as the time runs out, no input to
# blame (golang/go#75804, fixed in go1.27).
# The stack test runs again without -race, which doubles every stack's
# guard (so every read goroutine grows there, and the test skips itself).
test: vet ## vet, then every test under -race, with a short fuzz of each parser
	$(GO) test -race -count=1 -timeout 8m $(PKGS)
	$(GO) test -count=1 -run '^TestReadGoroutinesKeepTheirFirstStack$$' -v ./edge
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeClient$$' -fuzztime 150000x ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePublish$$' -fuzztime 150000x ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime 50000x ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeObject$$' -fuzztime 50000x ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzCheckSubscribe$$' -fuzztime 50000x ./auth

vet: ## gofmt check and go vet
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet $(PKGS)

fuzz: ## long fuzz runs of every parser (FUZZTIME each, default 2m)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeClient$$' -fuzztime $(or $(FUZZTIME),2m) ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePublish$$' -fuzztime $(or $(FUZZTIME),2m) ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzAppendString$$' -fuzztime $(or $(FUZZTIME),2m) ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(or $(FUZZTIME),2m) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzCheckSubscribe$$' -fuzztime $(or $(FUZZTIME),2m) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeObject$$' -fuzztime $(or $(FUZZTIME),2m) ./auth

bench: ## Go micro-benchmarks of the hot paths, with allocations
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

soak: ## the long soak test (minutes), not part of make test
	REALTIME_SOAK=1 $(GO) test -race -count=1 -timeout 30m -run Soak -v ./edge

lint: vet ## staticcheck (pinned Go tool)
	$(GO) tool staticcheck $(PKGS)
