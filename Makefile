# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native

.PHONY: help install services-deps test-deps lint typecheck test demo bench chaos simulate soak audit constraints dist sandbox clean

help:
	@echo "make demo   - start Kafka, registry and sandbox; produce sample events; run the consumer"
	@echo "make test   - install, lint, type-check and run the whole suite against real services"
	@echo "make bench  - benchmarks (not part of make test)"
	@echo "make simulate [SEEDS=100000] [SEED=n] - the deterministic simulation of the core"
	@echo "make soak   - the broker restarted mid-stream RESTARTS times (default 20), real Kafka"
	@echo "make dist   - sdist and wheels (the decoder as an abi3 wheel), checked and smoke-installed"

# One lock: constraints.txt pins every version; requirements-dev.lock (development, CI) and
# requirements.lock (the image) carry the same pins with their hashes, and pip refuses any file
# whose hash is not there. The package itself goes in without fetching anything more.
$(STAMP): pyproject.toml constraints.txt requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The compiled extension (native/, Rust via maturin; cargo fetches its crates once: the Avro
# decoder and the user_data rules) is an accelerator: without cargo, fastavro decodes and the
# Python rules hash everything, with the same results.
HAS_CARGO := $(shell command -v cargo >/dev/null && echo yes)
$(NATIVE): $(STAMP) native/pyproject.toml native/Cargo.toml native/Cargo.lock native/src/lib.rs native/capi_native.pyi \
  native/wire/Cargo.toml native/wire/src/lib.rs \
  native/src/userdata.rs native/userdata/Cargo.toml native/userdata/src/lib.rs
ifeq ($(HAS_CARGO),yes)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pip install -q --no-deps --no-build-isolation ./native
	touch $(NATIVE)
else
	@echo "cargo not found: fastavro decodes Avro and Python hashes user_data (native/ is optional; see README)"
endif

install: $(STAMP) $(NATIVE)

# Jars (Kafka, schema registry, Zipkin) and the Go-built Jaeger and kustomize are cached in .kafka/;
# Redis, promtool (package prometheus: alert rules and /metrics are checked with it) and
# docker-compose (to validate docker-compose.yml where no `docker compose` plugin exists) come from
# Debian's packages; hadolint and kubernetes-validate from the dev extra.
DEBIAN_PACKAGES = $(if $(shell command -v redis-server),,redis-server) \
                  $(if $(shell command -v docker-compose),,docker-compose) \
                  $(if $(shell command -v promtool),,prometheus)

services-deps: install
	$(BIN)/python -m devenv.fetch
	@if [ -n "$(strip $(DEBIAN_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	  else echo "missing: $(DEBIAN_PACKAGES) (apt-get install them for the Redis and compose tests)"; fi; fi

lint: install
	$(BIN)/ruff check consumer tests devenv bench
	$(BIN)/ruff format --check consumer tests
ifeq ($(HAS_CARGO),yes)
	cargo fmt --manifest-path native/Cargo.toml --all --check
	cargo clippy --quiet --manifest-path native/Cargo.toml --release --locked --workspace \
	  --all-targets -- -D warnings
endif

typecheck: install
	$(BIN)/mypy consumer tests

# Jaeger and kustomize take minutes to build on a cold machine; only the tests need them.
test-deps: services-deps
	$(BIN)/python -m devenv.fetch test-tools

# Both paths on every run: the whole suite with the compiled decoder and user_data rules where they
# are installed, then decoding, normalization, the fuzz tests and one end-to-end run without them.
PURE_PYTHON_TESTS = tests/test_decode.py tests/test_fuzz.py tests/test_fuzz_values.py \
  tests/test_userdata.py tests/test_normalize.py \
  tests/integration/test_pipeline.py::test_pipeline_end_to_end_delivers_exactly_what_mapping_says
test: test-deps lint typecheck
ifeq ($(HAS_CARGO),yes)
	cargo test --quiet --manifest-path native/Cargo.toml --locked -p capi-avro-wire -p capi-userdata
endif
	PYTHONHASHSEED=0 $(BIN)/pytest -q -p no:cacheprovider -p no:faulthandler || \
	  { status=$$?; tail -c 20000 .pytest-faults.log 2>/dev/null; exit $$status; }
	CAPI_AVRO_DECODER=fastavro CAPI_USER_DATA_HASHER=python PYTHONHASHSEED=0 $(BIN)/pytest -q \
	  -p no:cacheprovider -p no:faulthandler $(PURE_PYTHON_TESTS)

demo: services-deps
	$(BIN)/python -m devenv.demo

bench: services-deps
	$(BIN)/python -m bench.run

# Full-length fault runs: 1M events with 20 kills, a 10-minute sink outage, and the rest.
chaos: services-deps
	CHAOS_FULL=1 $(BIN)/pytest -q -s -p no:cacheprovider --timeout 7200 tests/integration/test_faults.py

# The consumer core on a virtual clock with in-memory Kafka, Pinterest and dead-letter topic
# (tests/simulation); SEED=n replays one seed exactly, SEEDS=n runs that many from FIRST.
SEEDS ?= 1000
FIRST ?= 0
simulate: install
	$(BIN)/python -m tests.simulation.run $(if $(SEED),--seed $(SEED),--seeds $(SEEDS) --first $(FIRST))

# The real broker restarted mid-stream RESTARTS times in a row, each with every partition back
# and everything committed (defect 0 of issue 23).
RESTARTS ?= 20
soak: services-deps
	SOAK_RESTARTS=$(RESTARTS) $(BIN)/pytest -q -p no:cacheprovider --timeout 7200 \
	  tests/integration/test_faults.py -k broker_restarted_again_and_again

# Needs the index's JSON API with vulnerability data (not served by every mirror).
audit: $(STAMP)
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit --strict --progress-spinner off -r requirements-dev.lock

# The image's exact versions (constraints.txt), from a fresh venv with only what the image installs.
# Distributions: the consumer (sdist and a pure wheel) and, with cargo, the compiled decoder as
# one abi3 wheel for this platform; checked, then installed into a fresh venv and smoke-tested.
DIST_VENV := .cache/dist-venv
dist: install
	rm -rf dist $(DIST_VENV)
	$(BIN)/python -m build --sdist --wheel --outdir dist .
ifeq ($(HAS_CARGO),yes)
	$(BIN)/maturin build --release --locked --quiet --manifest-path native/Cargo.toml --out dist
endif
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install -q --constraint constraints.txt --find-links dist \
	  "capi-consumer$(if $(filter yes,$(HAS_CARGO)),[fast])"
	$(DIST_VENV)/bin/consumer --version
	$(DIST_VENV)/bin/python -c "import capi_native" 2>/dev/null && echo "compiled decoder: installed" \
	  || echo "compiled decoder: not installed (fastavro decodes)"
	$(DIST_VENV)/bin/consumer transform --mapping schemas/mapping.example.yaml \
	  --input schemas/records.sample.jsonl --summary --now 1800000000 2>&1 >/dev/null \
	  | grep "^built [1-9]"
	@ls -1 dist

# Rebuild the lock from a fresh venv (runtime, dev tools and the zipkin extra), newest versions
# allowed by pyproject.toml, then the two hashed locks with exactly those versions (and the build
# backend's, for installs without build isolation); review the diff, then `make test`.
LOCK_VENV := .cache/constraints-venv
LOCK = CUSTOM_COMPILE_COMMAND="make constraints" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --all-build-deps \
  --constraint constraints.txt --output-file
constraints:
	rm -rf $(LOCK_VENV) requirements.lock requirements-dev.lock && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q ".[dev,zipkin]"
	{ head -3 constraints.txt; $(LOCK_VENV)/bin/pip freeze --exclude-editable | \
	  grep -v '^capi-consumer'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	$(LOCK) requirements.lock --extra zipkin pyproject.toml
	$(LOCK) requirements-dev.lock --extra dev --extra zipkin pyproject.toml

sandbox: $(STAMP)
	$(BIN)/consumer sandbox --port 8089

clean:
	rm -rf $(VENV) .kafka .pytest_cache .mypy_cache .ruff_cache
