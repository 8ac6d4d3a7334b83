# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The browser players (dash.js with its Smooth plugin, hls.js), from npm by
# package-lock.json, copied next to the demo page. npm ci runs only when the
# lock file is newer than what node_modules holds.
NPM_STAMP := node_modules/.package-lock.json
VENDOR := src/smoothlive/web/vendor
DASHJS := node_modules/dashjs
HLSJS := node_modules/hls.js
VENDOR_FILES := \
	$(VENDOR)/dash.all.min.js $(VENDOR)/dash.all.min.js.LICENSE.txt \
	$(VENDOR)/dash.mss.min.js $(VENDOR)/dashjs.LICENSE.md \
	$(VENDOR)/hls.min.js $(VENDOR)/hls.js.LICENSE

.PHONY: run test lint unit e2e web browser bench bench-quick bench-tools soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# `web` is order-only: the players are brought up to date before any test
# target, without reinstalling the Python packages when they change.
$(TEST_STAMP): pyproject.toml | $(BIN)/python web
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENDOR)/dash.%: $(NPM_STAMP)
	@mkdir -p $(VENDOR)
	cp $(DASHJS)/dist/modern/umd/dash.$* $@

$(VENDOR)/dashjs.LICENSE.md: $(NPM_STAMP)
	@mkdir -p $(VENDOR)
	cp $(DASHJS)/LICENSE.md $@

$(VENDOR)/hls.min.js: $(NPM_STAMP)
	@mkdir -p $(VENDOR)
	cp $(HLSJS)/dist/hls.min.js $@

$(VENDOR)/hls.js.LICENSE: $(NPM_STAMP)
	@mkdir -p $(VENDOR)
	cp $(HLSJS)/LICENSE $@

web: $(VENDOR_FILES)

run: $(STAMP) web
	$(BIN)/smoothlive serve --demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench soak fuzz

test: $(TEST_STAMP) lint
	$(BIN)/pytest -q

unit: $(TEST_STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(TEST_STAMP)
	$(BIN)/pytest -q tests/e2e

browser: $(TEST_STAMP)
	$(BIN)/pytest -q tests/browser

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP) $(TEST_STAMP) $@

# nginx and wrk from Debian, as .ci/run installs chromium: only when missing.
bench-tools:
	@if ! command -v wrk >/dev/null 2>&1 || ! { command -v nginx >/dev/null 2>&1 || \
	    test -x /usr/sbin/nginx; }; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    nginx wrk >/dev/null; \
	  else echo "bench: install nginx and wrk (sudo apt-get install nginx wrk)"; exit 1; fi; \
	fi

bench: $(BENCH_STAMP) bench-tools
	$(BIN)/python bench/run.py

bench-quick: $(BENCH_STAMP) bench-tools
	$(BIN)/python bench/run.py --quick

# The long versions of the reliability tests (RELIABILITY.md): 100,000 fuzz cases,
# 20 kill -9 trials, then the load soak (SOAK_MINUTES, 30 by default); about an hour.
SOAK_MINUTES ?= 30

soak: $(BENCH_STAMP)
	SMOOTHLIVE_FUZZ_EXAMPLES=100000 $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_fuzz_ingest.py
	SMOOTHLIVE_CRASH_TRIALS=20 $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_crash_trials.py
	$(BIN)/python soak/load.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis node_modules $(VENDOR)
