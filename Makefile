# cube's build. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GO      ?= go
# The test suite runs against the real Docker Engine; keep it well under CI's limit.
TEST_TIMEOUT ?= 25m
# Tests that run in parallel (t.Parallel) at once within a package: the end-to-end tests mostly
# wait for the Engine, so more than the 2 cores' worth.
TEST_PARALLEL ?= 4
# The fuzzers, as package:FuzzName:executions. Each runs for a count of executions (5-10 s of
# fuzzing each on this 2-core machine), not a duration: Go 1.26's fuzz coordinator can fail a run
# with a bare "context deadline exceeded" as a -fuzztime duration ends (go.dev/issue/75804, fixed
# in Go 1.27); a count takes the deadline out. FUZZTIME=2000000x (or a duration) runs every fuzzer
# for that instead.
FUZZERS := ./api:FuzzDecodeEvent:80000 ./api:FuzzRouteTaskID:30000 ./task:FuzzBindPolicy:15000 \
	./task:FuzzPortsAndSignals:80000 ./task:FuzzAppendJSON:50000
FUZZTIME ?=

.PHONY: help build install run test test-deps fuzz bench check images image clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the static cube binary into bin/cube
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/cube ./cmd/cube

install: build ## copy bin/cube into $(go env GOBIN), or $(go env GOPATH)/bin without one
	@dir=$$($(GO) env GOBIN); [ -n "$$dir" ] || dir=$$($(GO) env GOPATH)/bin; \
	mkdir -p "$$dir" && cp bin/cube "$$dir/cube" && echo "installed $$dir/cube"

run: build images ## build, then run the worker in the foreground on 127.0.0.1:5556
	./bin/cube worker

test: test-deps ## run the whole suite with -race against the real Docker Engine
	$(GO) test -race -count=1 -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./...

# What the suite needs beyond Go and make: a Docker Engine that answers, and Debian's
# docker-registry for the pull tests, installed here with apt-get when it is missing and we are
# root (otherwise one line says how to get it).
test-deps: ## check the Docker Engine and install docker-registry if missing (the suite's needs)
	@command -v $(GO) >/dev/null || { echo "make test: Go is not on PATH (install Go 1.26 or later; /usr/local/go/bin?)" >&2; exit 1; }
	@command -v docker >/dev/null || { echo "make test: the docker CLI is missing: install Docker Engine 20.10 or later" >&2; exit 1; }
	@timeout 20 docker info >/dev/null 2>&1 || { echo "make test: no Docker Engine answers (start dockerd, or set DOCKER_HOST)" >&2; exit 1; }
	@if ! command -v docker-registry >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make test: installing Debian's docker-registry for the pull tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-registry >/dev/null; } || \
	      { echo "make test: apt-get install docker-registry failed" >&2; exit 1; }; \
	  else \
	    echo "make test: the pull tests need Debian's docker-registry: sudo apt-get install docker-registry" >&2; exit 1; \
	  fi; \
	fi

fuzz: ## run each fuzzer for its count of executions (or FUZZTIME); a failing input lands in testdata/fuzz
	@set -e; for f in $(FUZZERS); do \
	  pkg=$${f%%:*}; rest=$${f#*:}; name=$${rest%%:*}; n=$${rest##*:}; t='$(FUZZTIME)'; t=$${t:-$${n}x}; \
	  echo "fuzz: $$name in $$pkg for $$t"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$t $$pkg; \
	done

bench: build images ## cube against the raw Docker SDK (cube-bench; BENCHFLAGS=-quick), then the Go benchmarks
	$(GO) run ./cmd/cube-bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./task/ ./worker/ ./api/

check: ## gofmt, go vet, go mod tidy unchanged, and the package import arrows
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@tmp=$$(mktemp -d); cp go.mod go.sum $$tmp/; $(GO) mod tidy; \
	if ! cmp -s go.mod $$tmp/go.mod || ! cmp -s go.sum $$tmp/go.sum; then \
	  echo "go mod tidy changes go.mod/go.sum:"; diff -u $$tmp/go.mod go.mod; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp
	$(GO) test -count=1 ./internal/arch/

images: ## build the example image cube-echo:latest (FROM scratch, no registry needed)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o examples/echo/echo ./examples/echo
	DOCKER_BUILDKIT=0 docker build -q -t cube-echo:latest examples/echo

image: build ## build the worker's own image cube-worker:latest from bin/cube
	DOCKER_BUILDKIT=0 docker build -q -t cube-worker:latest .

clean: ## remove build output
	rm -rf bin examples/echo/echo
