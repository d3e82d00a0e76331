# The two commands that matter: `make up` runs the whole stack, `make test` runs every check.
# Both install what they need first, from package registries only (PyPI, the Go module proxy,
# Maven Central, npm, Debian), so they work on a fresh Linux machine with Python 3.11+, Go,
# Java 17+, Maven, Node 20 and make.

SHELL := /bin/bash
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# Use the machine's Python; never download one.
export UV_PYTHON_DOWNLOADS := never
# Nothing at run time may fetch models from a hub (they ship inside the wheels).
export HF_HUB_OFFLINE := 1
# Go's own installer puts it here, not always on PATH.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: up up-cluster test faults cluster bench install redis livekit zipkin helm lint typecheck docs web client client-check chromium clean

up: install livekit zipkin web
	$(UV) run mediai up

# The cluster topology on this machine (docs/scaling.md): 3 NATS, 2 LiveKit on Redis, 2 replicas
# of every service, 2 agent worker pools.
up-cluster: install livekit redis web
	$(UV) run mediai up --cluster

# The fault and cluster suites run after the rest, never beside it: each of their modules starts
# a stack of its own (docs/reliability.md, docs/scaling.md). The browser tests (tests/browser) run
# with the rest, in Debian's Chromium against the console built by `web`.
test: install livekit redis zipkin helm lint typecheck docs client-check web chromium
	$(UV) run pytest -m "not faults and not cluster"
	$(UV) run pytest -m faults tests/faults
	$(UV) run pytest -m cluster tests/cluster

# The fault suite alone: real faults (kill, stop, freeze by pid) on private stacks, with figures.
# MEDIAI_FAULT_OUTAGE=60 gives the outages of the figures in docs/reliability.md.
faults: install livekit
	$(UV) run pytest -m faults tests/faults

# The cluster suite alone (about 5 minutes here: most of it starting 25 processes).
cluster: install livekit redis
	$(UV) run pytest -m cluster tests/cluster

# The benchmarks with a bare baseline, each run beside it in the same script (MediAI's token path
# against a bare Litestar app, and its read endpoints against one running the same SQL; a
# worker's cold start and an agent's join and answer against bare livekit-agents; the billing
# replay against a bare nats-py consumer; LiveKit webhooks at 100/500/1000 per second against a
# bare app verifying and publishing the same; what one consultation costs the agent host against
# the bare voice agent), then the others (agent capacity by concurrency, one node against the
# cluster). Each prints its figures and writes bench/results/*.json; none
# fails on speed. Run on a quiet machine: about 30-35 minutes here, summing its parts (not yet
# timed whole). The soak (python -m bench.soak --minutes 60) is not in it.
bench: install livekit
	$(UV) run python -m bench.token_throughput --runs 3
	$(UV) run python -m bench.read_throughput --runs 3
	$(UV) run python -m bench.worker_cold_start --runs 4
	$(UV) run python -m bench.billing_replay --events 1000000 --runs 1
	$(UV) run python -m bench.webhooks_latency
	$(UV) run python -m bench.agent_latency --runs 5
	$(UV) run python -m bench.agent_cost --patients 1,3 --turns 3
	$(UV) run python -m bench.agent_capacity --patients 1,5,10 --turns 2
	$(UV) run python -m bench.phi_publish --runs 2
	$(UV) run python -m bench.stack_startup --runs 2 --without-zipkin
	$(UV) run python -m bench.cluster_throughput --runs 2

install: $(UV)
	$(UV) sync --frozen

# Redis for the LiveKit nodes of the cluster topology: Debian's redis-server (its service is not
# started; the stack runs its own on its own port).
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Builds the pinned LiveKit server once into ~/.cache/mediai (skipped when LIVEKIT_URL is set).
livekit: install
	@if [ -z "$$LIVEKIT_URL" ]; then $(UV) run mediai livekit build; fi

# Fetches the pinned Zipkin server (the local tracing UI) once into ~/.cache/mediai, from Maven
# Central with Maven, its checksum checked (skipped when MEDIAI_ZIPKIN=false).
zipkin: install
	@if [ "$${MEDIAI_ZIPKIN:-true}" != "false" ]; then $(UV) run mediai zipkin fetch; fi

# Builds the pinned helm once into ~/.cache/mediai: the chart's tests render deploy/helm with it.
helm: install
	$(UV) run mediai tools build helm

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck: install
	$(UV) run mypy

# Generated docs match the code; the API document's breaking changes are declared (oasdiff, built
# once from the Go module proxy into ~/.cache/mediai).
docs: install
	$(UV) run mediai docs events --check
	$(UV) run mediai docs openapi --check
	$(UV) run mediai docs nats-users --check

# The web console (web/): npm ci from the committed lockfile (only when it changed), then the
# type check and Vite's build into web/dist, which the gateway serves at /.
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web: web/node_modules/.package-lock.json
	cd web && npm run build

# The console's API types, generated from the services' OpenAPI documents (built from their
# apps, no stack needed); client-check fails when the committed ones are stale.
client: install web/node_modules/.package-lock.json
	$(UV) run mediai docs openapi --per-service web/.openapi
	cd web && node scripts/gen-api.mjs

client-check: install web/node_modules/.package-lock.json
	$(UV) run mediai docs openapi --per-service web/.openapi
	cd web && node scripts/gen-api.mjs --check

# The browser tests drive Debian's Chromium through Playwright's Python package (its driver ships
# in the wheel); Playwright never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

clean:
	rm -rf .venv $(TOOLS) .mypy_cache .ruff_cache .pytest_cache web/node_modules web/dist web/.openapi
