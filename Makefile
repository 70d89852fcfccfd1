# OmniCare — two commands: `make demo` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Newest Python >= 3.12 on this machine (pyenv installs included); override with `make PYTHON=/path/to/python3.13`.
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then command -v $$p; break; fi; done)
VENV := .venv
PY := $(VENV)/bin/python
PYODIDE_VERSION := 314.0.7
PYODIDE_DIR := pwa/vendor/pyodide
WHEEL_DIR := pwa/wheels
TEST_WHEELS := .cache/pyodide-wheels
HOST ?= 127.0.0.1
PORT ?= 8000
HL7_PORT ?= 2575
DEMO_PATIENTS ?= 40
DEMO_SEED ?= 7

.PHONY: help deps python-deps node-deps static-compressed wheel demo serve migrate seed test test-py test-e2e test-rest test-pyodide test-smoke test-long test-soak test-sync-long lint bench clean

help:
	@echo "make demo   install everything, load demo data, serve on http://$(HOST):$(PORT)"
	@echo "make test   the whole test suite (CPython, Pyodide under Node)"
	@echo "make lint   ruff + mypy --strict on pyclient"
	@echo "make bench  benchmarks against PouchDB and raw IndexedDB (writes BENCHMARKS.md, bench/results.json)"

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "error: Python >= 3.12 is required (Django 6); none found. Install python3.12+ or run make PYTHON=/path/to/python3.12" >&2; exit 1; fi
	@echo "using $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

$(VENV)/.deps: pyproject.toml $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

python-deps: $(VENV)/.deps

node_modules/pyodide/package.json: package.json
	npm install --no-audit --no-fund
	@touch $@

# The runtime is copied where the server serves it (same origin as the app; never a CDN).
$(PYODIDE_DIR)/pyodide.mjs: node_modules/pyodide/package.json
	rm -rf $(PYODIDE_DIR) && mkdir -p $(PYODIDE_DIR)
	cp node_modules/pyodide/{pyodide.mjs,pyodide.asm.mjs,pyodide.asm.wasm,python_stdlib.zip,pyodide-lock.json,package.json} $(PYODIDE_DIR)/

node-deps: $(PYODIDE_DIR)/pyodide.mjs

# The pure-Python pyclient wheel the browser loads (same code the server imports).
PYCLIENT_SOURCES := $(shell find pyclient -type f -not -path '*/build/*' -not -path '*/__pycache__/*' -not -path '*.egg-info*')
$(WHEEL_DIR)/.built: $(PYCLIENT_SOURCES) $(VENV)/.deps
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(PY) -m pip wheel --quiet --no-deps ./pyclient -w $(WHEEL_DIR)
	rm -rf pyclient/build pyclient/*.egg-info
	$(PY) -c 'import json,pathlib,sys; w=sorted(pathlib.Path(sys.argv[1]).glob("*.whl")); print(json.dumps({"pyclient": w[-1].name}))' $(WHEEL_DIR) > $(WHEEL_DIR)/wheels.json
	@touch $@

wheel: $(WHEEL_DIR)/.built

# Pre-compressed at build time (.gz beside each file; .br too when brotli is installed): WhiteNoise serves
# them as they are, so the 9.6 MB wasm costs no per-request gzip.
$(PYODIDE_DIR)/.compressed: $(PYODIDE_DIR)/pyodide.mjs $(VENV)/.deps
	$(PY) -m whitenoise.compress -q $(PYODIDE_DIR)
	@touch $@

static-compressed: $(PYODIDE_DIR)/.compressed

deps: python-deps node-deps wheel static-compressed

migrate: deps
	OMNICARE_DEBUG=1 $(PY) manage.py migrate --noinput

seed: migrate
	OMNICARE_DEBUG=1 $(PY) manage.py seed_demo --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED)
	OMNICARE_DEBUG=1 $(PY) manage.py create_demo_users

demo: seed serve

serve:
	@echo "OmniCare on http://$(HOST):$(PORT)/  (FHIR: /fhir/R4/metadata, API docs: /api/docs, admin: /admin/)"
	@echo "HL7 v2 MLLP listener on $(HOST):$(HL7_PORT)"
	OMNICARE_DEBUG=1 $(PY) manage.py hl7_listen --host $(HOST) --port $(HL7_PORT) & hl7=$$!; \
	  trap 'kill $$hl7 2>/dev/null' EXIT INT TERM; \
	  OMNICARE_DEBUG=1 $(VENV)/bin/uvicorn omnicare.asgi:application --host $(HOST) --port $(PORT) --no-access-log

# --- tests -------------------------------------------------------------------------
$(TEST_WHEELS)/.fetched: $(VENV)/.deps
	mkdir -p $(TEST_WHEELS)
	$(PY) -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.14 --platform any --implementation py \
	  -d $(TEST_WHEELS) pytest pluggy iniconfig packaging pygments hypothesis attrs sortedcontainers
	@touch $@

# The browser tests (tests/e2e: a server, Chromium and Pyodide per test, mostly waiting on them) run beside the
# rest of the suite: each stream keeps about one core busy, so together they take about the time of the longer
# one. TEST_ALSO names more targets for the second stream (CI adds the long simulation run and the SQLite smoke);
# the browser stream's output follows the other's, and either failing fails `make test`.
TEST_ALSO ?=
test: deps bench-deps $(TEST_WHEELS)/.fetched
	@mkdir -p .cache; rm -f .cache/test-e2e.log .cache/test-e2e.rc
	@( $(MAKE) --no-print-directory test-e2e > .cache/test-e2e.log 2>&1; echo $$? > .cache/test-e2e.rc ) & e2e=$$!; \
	  $(MAKE) --no-print-directory --keep-going test-rest test-pyodide $(TEST_ALSO); rc=$$?; wait $$e2e; \
	  echo "--- the browser tests (tests/e2e), run beside the above:"; cat .cache/test-e2e.log; \
	  [ $$rc -eq 0 ] && [ "$$(cat .cache/test-e2e.rc)" = 0 ]

# The whole CPython suite in one process (what `make test` runs as two streams).
test-py: deps bench-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-e2e: deps
	$(if $(OMNICARE_TEST_DB_NAME),OMNICARE_TEST_DB_NAME=$(OMNICARE_TEST_DB_NAME)_e2e) $(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

test-rest: deps bench-deps
	$(PY) -m pytest -q --ignore=tests/e2e $(PYTEST_ARGS)

test-pyodide: deps $(TEST_WHEELS)/.fetched
	rm -f $(TEST_WHEELS)/omnicare_pyclient-*.whl && cp $(WHEEL_DIR)/*.whl $(TEST_WHEELS)/
	node tests/pyodide/run_pytest.mjs node_modules/pyodide $(TEST_WHEELS) /tests/pyclient

# The long convergence run: 10,000 seeded simulations (the default suite runs 1,000); CI runs it.
test-long: deps
	OMNICARE_SIM_RUNS=10000 $(PY) -m pytest -q -p no:django tests/pyclient/test_convergence.py

# A night's soak: SOAK_SEEDS (default 100,000) simulator seeds in one shard per core, then 5,000 seeds of the
# randomized run through the real Django server (embedded SQLite). Each shard prints the seed of a failure.
SOAK_SEEDS ?= 100000
SOAK_SHARDS ?= $(shell nproc)
test-soak: deps
	@echo "soak: $(SOAK_SEEDS) simulator seeds in $(SOAK_SHARDS) shards"
	@mkdir -p .cache; per=$$(( ($(SOAK_SEEDS) + $(SOAK_SHARDS) - 1) / $(SOAK_SHARDS) )); pids=""; \
	for i in $$(seq 0 $$(( $(SOAK_SHARDS) - 1 ))); do \
	  OMNICARE_SIM_FIRST=$$(( i * per )) OMNICARE_SIM_RUNS=$$per $(PY) -m pytest -q -p no:django -p no:cacheprovider \
	    tests/pyclient/test_convergence.py > .cache/soak-$$i.log 2>&1 & pids="$$pids $$!"; done; \
	rc=0; for p in $$pids; do wait $$p || rc=1; done; tail -n 3 .cache/soak-*.log; exit $$rc
	$(MAKE) test-sync-long

# The randomized run through the real server: 5,000 seeds (CI runs 200 on SQLite, 50 on PostgreSQL).
test-sync-long: deps
	env -u DATABASE_URL -u REDIS_URL OMNICARE_SYNC_SIM_RUNS=5000 $(PY) -m pytest -q tests/omnicare/sync/test_reliability.py

# Embedded default (SQLite, eager Celery, in-memory channels): no services needed. The server's tests only:
# tests/pyclient touches no database or broker (it runs in Pyodide as it is), so it says nothing new here.
test-smoke: deps
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -q -x tests/omnicare $(PYTEST_ARGS)

lint: python-deps
	$(VENV)/bin/ruff check omnicare pyclient tests
	$(VENV)/bin/mypy --strict pyclient

clean:
	rm -rf $(VENV) node_modules $(PYODIDE_DIR) $(WHEEL_DIR) .cache var

include bench/Makefile.inc
