# Entry point for people and CI. `make test` runs every test, end-to-end included;
# `make demo` runs the product's main job on the local cloud.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
PLUGIN_DIR := $(CURDIR)/plugins
PLUGINS := $(patsubst %/main.go,%,$(wildcard */main.go))
E2E_TIMEOUT ?= 60m

.PHONY: all help build tools ansible test unit e2e demo lint bench clean

## all: the same as build (the default target)
all: build

## help: this list: every target with one line
help:
	@sed -n 's/^## \([a-z0-9-]*\): /\1\t/p' $(MAKEFILE_LIST) | expand -t 10

## build: the plugin binaries into plugins/
build:
	@mkdir -p $(PLUGIN_DIR)
	@for p in $(PLUGINS); do \
		echo "go build $$p"; \
		$(GO) build -o $(PLUGIN_DIR)/$$p ./$$p || exit 1; \
	done

## tools: bin/nomad (Nomad v1.6.3) and bin/nomad-autoscaler (agent v0.5.0)
tools: $(BIN)/nomad $(BIN)/nomad-autoscaler

$(BIN)/nomad: e2e/tools/nomad/go.mod e2e/tools/nomad/go.sum
	@mkdir -p $(BIN)
	cd e2e/tools/nomad && $(GO) build -o $(BIN)/nomad github.com/hashicorp/nomad

$(BIN)/nomad-autoscaler: go.mod go.sum
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/nomad-autoscaler github.com/hashicorp/nomad-autoscaler

## ansible: ansible-playbook (Debian's ansible-core) for the AWX stand-in's real playbook runs
ansible:
	@command -v ansible-playbook >/dev/null || { \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && $$SUDO apt-get install -y ansible-core; }

## test: unit tests (with -race) then end-to-end tests on the local cloud
test: lint unit e2e

## unit: unit tests only, with -race (no Nomad, moto or agent needed)
unit:
	$(GO) test -race -count=1 ./...

## e2e: end-to-end tests only (real Nomad, moto, agent v0.5.0, ansible-playbook); output also in e2e-test.out
e2e: build tools ansible
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/... 2>&1 | tee e2e-test.out; exit $${PIPESTATUS[0]}

## demo: a day in miniature on the local cloud (3-4 min): load, AWX hooks, a failing playbook, a spot interruption; picture in demo-out/
demo: build tools ansible
	$(GO) run ./e2e/demo

## lint: gofmt and go vet (unit and e2e build tags)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

## bench: replay the shared traces under every policy; rewrites docs/benchmark.md and docs/bench/*.svg
TRACES ?= ../shared/traces
bench:
	$(GO) run ./strategy-cpu-target/sim/cmd/simulate -traces $(TRACES) -spot-rate 0.005 -unplaced -sensitivity alibaba2018 -plots docs/bench -doc docs/benchmark.md

## clean: remove the built binaries and test output
clean:
	rm -rf $(BIN) $(PLUGIN_DIR)/target-spotfleet $(PLUGIN_DIR)/strategy-cpu-target $(PLUGIN_DIR)/apm-node e2e-test.out
