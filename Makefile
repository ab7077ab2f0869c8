# gobetween — build, run, test and benchmark.
#
#   make run      build, start three demo backends and gobetween on :3000 (Ctrl-C stops all)
#   make test     go vet, gofmt check, go test -race ./... (what CI runs)
#   make bench    install HAProxy and nginx if missing, compare them with gobetween
#
# Every recipe is one bash script (.ONESHELL) that stops at the first failing command.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

GO      ?= go
BIN     := bin
PKG     := ./cmd/gobetween
CONFIG  ?= deploy/examples/gobetween.toml

VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH   := $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.revision=$(REVISION) -X main.branch=$(BRANCH)

# Demo backends started by `make run`; deploy/examples/gobetween.toml points at them.
DEMO_ADDRS := 127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003

TEST_TIMEOUT ?= 12m
FUZZTIME     ?= 10s
FUZZPKGS     ?= ./...

BENCH_DURATION ?= 5s
BENCH_WARMUP   ?= 1s
BENCH_REPS     ?= 3
BENCH_OUT      ?= e2e/bench/results/bench.json
BENCH_FLAGS    ?=

# Debian packages each target needs. The tests need only Go today; list a package
# here and `make test` installs it on a fresh machine (CI included).
TEST_PKGS  := iproute2 openssl curl haproxy dnsmasq-base keepalived prometheus chromium docker-compose systemd
# Pebble, the ACME server the ACME tests run, from the module proxy.
PEBBLE_BIN := $${TMPDIR:-/tmp}/gobetween-e2e-pebble-v2.10.1
BENCH_PKGS := haproxy nginx libnginx-mod-stream

# `make docker`: images tagged $(DOCKER_REPO):$(DOCKER_TAG) and :latest (deploy/compose
# uses :latest), the demo backend as $(DOCKER_REPO)-demo; the build context is DOCKER_BUILD_DIR.
DOCKER_REPO       ?= gobetween
DOCKER_TAG        ?= $(VERSION)
DOCKER_IMAGE      ?= $(DOCKER_REPO):$(DOCKER_TAG)
DOCKER_DEMO_IMAGE ?= $(DOCKER_REPO)-demo:$(DOCKER_TAG)
DOCKER_BUILD_DIR  ?= $(BIN)/docker

.PHONY: build run cluster test vet fmt fmt-check fuzz bench docker deps modules clean

build: $(BIN)/gobetween

# Always re-run go build: it is incremental and knows the Go dependencies better than make.
$(BIN)/gobetween: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ $(PKG)

$(BIN)/demo-backend: FORCE
	$(GO) build -trimpath -o $@ ./deploy/demo

.PHONY: FORCE
FORCE:

run: $(BIN)/gobetween $(BIN)/demo-backend
	@pids=()
	cleanup() {
	  # Stop exactly the demo backends this recipe started, by their PIDs.
	  if (($${#pids[@]})); then kill "$${pids[@]}" 2>/dev/null || true; wait "$${pids[@]}" 2>/dev/null || true; fi
	  pids=()
	}
	trap cleanup EXIT INT TERM
	for addr in $(DEMO_ADDRS); do
	  $(BIN)/demo-backend -listen "$$addr" &
	  pids+=($$!)
	done
	for addr in $(DEMO_ADDRS); do
	  host=$${addr%:*} port=$${addr##*:}
	  for _ in $$(seq 50); do
	    (exec 3<>"/dev/tcp/$$host/$$port") 2>/dev/null && break
	    sleep 0.1
	  done
	done
	echo "demo backends: $(DEMO_ADDRS) (PIDs $${pids[*]}); gobetween on :3000 — try: curl localhost:3000"
	$(BIN)/gobetween -c $(CONFIG)

# A three-node cluster on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (no root needed: the
# whole 127.0.0.0/8 is loopback) with the demo backends; Ctrl-C stops everything.
cluster: $(BIN)/gobetween $(BIN)/demo-backend
	@pids=()
	cleanup() {
	  if (($${#pids[@]})); then kill "$${pids[@]}" 2>/dev/null || true; wait "$${pids[@]}" 2>/dev/null || true; fi
	  pids=()
	}
	trap cleanup EXIT INT TERM
	mkdir -p gobetween-data
	for addr in $(DEMO_ADDRS); do
	  $(BIN)/demo-backend -listen "$$addr" &
	  pids+=($$!)
	done
	# The nodes' first health checks should find the backends up.
	for addr in $(DEMO_ADDRS); do
	  host=$${addr%:*} port=$${addr##*:}
	  for _ in $$(seq 50); do
	    (exec 3<>"/dev/tcp/$$host/$$port") 2>/dev/null && break
	    sleep 0.1
	  done
	done
	for i in 1 2 3; do
	  $(BIN)/gobetween -c deploy/examples/cluster/n$$i.toml > gobetween-data/n$$i.log 2>&1 &
	  pids+=($$!)
	done
	for i in 1 2 3; do
	  for _ in $$(seq 100); do
	    curl -fsS "http://127.0.0.$$i:8888/ready" >/dev/null 2>&1 && break
	    sleep 0.1
	  done
	done
	cat <<'TRY'
	three nodes: API on 127.0.0.1:8888, 127.0.0.2:8888, 127.0.0.3:8888; logs in gobetween-data/n*.log
	  curl 127.0.0.1:3000; curl 127.0.0.2:3000; curl 127.0.0.3:3000     # the same backend for one client (iphash1)
	  curl -s 127.0.0.2:8888/cluster                                     # members, leader, revision
	  curl -s -X POST 127.0.0.3:8888/servers/web2 -d '{"bind":":3001","discovery":{"kind":"static","static_list":["127.0.0.1:8002"]}}'
	  curl 127.0.0.1:3001                                                # the write on n3 serves on every node
	  bin/gobetween servers --api 127.0.0.2:8888                         # the client: servers, backends, cluster
	  bin/gobetween backends drain demo 127.0.0.1:8001 --wait            # drain, wait until no connection is left
	  http://127.0.0.1:8888/ui/                                          # the live dashboard (any node)
	  curl -s 127.0.0.1:9284/metrics; prometheus --config.file=deploy/prometheus/prometheus.yml
	Ctrl-C stops the cluster and the demo backends.
	TRY
	wait

test: modules
	$(MAKE) deps PKGS="$(TEST_PKGS)"
	GOFLAGS= GOBIN="$(PEBBLE_BIN)" $(GO) install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1
	$(GO) vet ./...
	$(MAKE) fmt-check
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

vet:
	$(GO) vet ./...

# Go files of the repository, testdata excluded (it may hold deliberately bad input).
GOFILES = find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0

fmt:
	$(GOFILES) | xargs -0 -r gofmt -w

fmt-check:
	@bad=$$($(GOFILES) | xargs -0 -r gofmt -l)
	if [[ -n "$$bad" ]]; then
	  echo "gofmt needed (run 'make fmt'):"; echo "$$bad"; exit 1
	fi

# Runs every Fuzz* target of the packages in FUZZPKGS for FUZZTIME each (go test
# -fuzz takes one target per run).
fuzz: modules
	@for pkg in $$($(GO) list $(FUZZPKGS)); do
	  list=$$($(GO) test -list '^Fuzz' "$$pkg")
	  for fz in $$(grep '^Fuzz' <<<"$$list" || true); do
	    echo "== $$pkg $$fz ($(FUZZTIME))"
	    $(GO) test -run '^$$' -fuzz "^$$fz$$" -fuzztime $(FUZZTIME) "$$pkg"
	  done
	done

bench: modules $(BIN)/gobetween
	$(MAKE) deps PKGS="$(BENCH_PKGS)"
	mkdir -p "$$(dirname $(BENCH_OUT))"
	$(GO) run ./e2e/bench -bin $(BIN)/gobetween -duration $(BENCH_DURATION) \
	  -warmup $(BENCH_WARMUP) -reps $(BENCH_REPS) -out $(BENCH_OUT) $(BENCH_FLAGS)
	@echo "gossip of observed state, three nodes on loopback:"
	$(GO) test -count=1 -run 'TestGossipCostReport' -v ./cluster | grep -E 'backends \('

# Two images FROM scratch, built locally from static binaries (no registry, no Go
# in the image): gobetween (deploy/Dockerfile) and the demo backend
# (deploy/Dockerfile.demo). The build context is only the binaries, the example
# config and the empty directory that becomes the data volume.
docker:
	rm -rf $(DOCKER_BUILD_DIR) && mkdir -p $(DOCKER_BUILD_DIR)/data
	export CGO_ENABLED=0 GOOS=linux
	$(GO) build -trimpath -ldflags '$(LDFLAGS) -s -w' -o $(DOCKER_BUILD_DIR)/gobetween $(PKG)
	$(GO) build -trimpath -ldflags '-s -w' -o $(DOCKER_BUILD_DIR)/demo-backend ./deploy/demo
	cp deploy/examples/gobetween.toml $(DOCKER_BUILD_DIR)/gobetween.toml
	# The image runs as uid 65532: modes must not depend on the builder's umask.
	chmod 0755 $(DOCKER_BUILD_DIR)/gobetween $(DOCKER_BUILD_DIR)/demo-backend $(DOCKER_BUILD_DIR)/data
	chmod 0644 $(DOCKER_BUILD_DIR)/gobetween.toml
	stamp=(--label org.opencontainers.image.version=$(VERSION) --label org.opencontainers.image.revision=$(REVISION))
	# The two builds are independent: run them side by side, wait for both.
	docker build -q -f deploy/Dockerfile "$${stamp[@]}" -t $(DOCKER_IMAGE) -t $(DOCKER_REPO):latest $(DOCKER_BUILD_DIR) & gbt=$$!
	docker build -q -f deploy/Dockerfile.demo "$${stamp[@]}" -t $(DOCKER_DEMO_IMAGE) -t $(DOCKER_REPO)-demo:latest $(DOCKER_BUILD_DIR) & demo=$$!
	failed=0
	wait $$gbt || failed=1
	wait $$demo || failed=1
	if ((failed)); then echo "docker build failed" >&2; exit 1; fi
	echo "built $(DOCKER_IMAGE), $(DOCKER_DEMO_IMAGE) (and :latest); try: docker-compose -f deploy/compose/docker-compose.yml up"

# Installs the Debian packages in PKGS that are missing (apt-get update once, first).
# `make test` passes TEST_PKGS, `make bench` BENCH_PKGS; `make deps PKGS="a b"` works alone.
PKGS ?=
deps:
	@missing=()
	for p in $(PKGS); do dpkg -s "$$p" >/dev/null 2>&1 || missing+=("$$p"); done
	if (($${#missing[@]} == 0)); then exit 0; fi
	echo "installing Debian packages: $${missing[*]}"
	sudo=; if [[ $$(id -u) != 0 ]]; then sudo=sudo; fi
	export DEBIAN_FRONTEND=noninteractive
	$$sudo apt-get update -qq
	$$sudo apt-get install -y -qq --no-install-recommends "$${missing[@]}"

modules:
	$(GO) mod download

clean:
	rm -rf $(BIN) e2e/bench/results
