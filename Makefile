# The two commands that matter: `make up` runs the whole stack, `make test` runs every check.
# Both install what they need first, from package registries only (PyPI, the Go module proxy,
# Maven Central, Debian), so they work on a fresh Linux machine with Python 3.11+, Go, Java 17+,
# Maven and make.

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

.PHONY: up test faults install livekit zipkin helm lint typecheck docs clean

up: install livekit zipkin
	$(UV) run mediai up

# The fault suite runs after the rest, never beside it: each of its modules starts a stack of
# its own (docs/reliability.md).
test: install livekit zipkin helm lint typecheck docs
	$(UV) run pytest -m "not faults"
	$(UV) run pytest -m faults tests/faults

# The fault suite alone: real faults (kill, stop, freeze by pid) on private stacks, with figures.
# MEDIAI_FAULT_OUTAGE=60 gives the outages of the figures in docs/reliability.md.
faults: install livekit
	$(UV) run pytest -m faults tests/faults

install: $(UV)
	$(UV) sync --frozen

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

docs: install
	$(UV) run mediai docs events --check
	$(UV) run mediai docs nats-users --check

clean:
	rm -rf .venv $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
