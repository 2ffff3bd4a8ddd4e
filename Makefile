# The two commands: `make run` and `make test`. Everything else is what they are made of.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8501

CONFORMANCE_VENV := .venv-conformance
CONFORMANCE_PY := $(CONFORMANCE_VENV)/.installed
CONFORMANCE_NODE := tests/conformance/node/node_modules/.package-lock.json

.PHONY: run test setup bootstrap lint format bench postgres chromium conformance clean screenshots

$(INSTALLED): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(INSTALLED)

setup: $(INSTALLED)

# The conformance suite's instrumented clients (tests/conformance): the Python ones in a virtualenv
# of their own, so their dependencies never move the app's pins; the Node one with npm ci.
$(CONFORMANCE_PY): tests/conformance/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/pip install --quiet --upgrade pip
	$(CONFORMANCE_VENV)/bin/pip install --quiet -r tests/conformance/requirements.txt
	touch $(CONFORMANCE_PY)

$(CONFORMANCE_NODE): tests/conformance/node/package.json tests/conformance/node/package-lock.json
	@bash scripts/ensure-node.sh
	cd tests/conformance/node && npm ci --no-audit --no-fund --loglevel=error

conformance: $(CONFORMANCE_PY) $(CONFORMANCE_NODE)

# Migrates, writes a login secret, loads demo data on the first run, creates the first admin.
bootstrap: setup
	$(BIN)/python -m observatory_core bootstrap

run: bootstrap
	OBSERVATORY_DEMO_TRAFFIC=$${OBSERVATORY_DEMO_TRAFFIC:-3} $(BIN)/streamlit run server.py --server.port $(PORT)

postgres:
	@bash scripts/ensure-postgres.sh

chromium:
	@bash scripts/ensure-chromium.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The set-up's steps that do not wait on each other run side by side (the conformance clients'
# installs beside the app's), then three workers on the CI machine's two cores: much of a test's
# time is spent waiting on PostgreSQL, a live server, Chromium or a client process, which a
# third worker fills (17:50 -> 16:03 on this suite at a5117f0, 2026-12-07); a module's tests stay
# on one worker, so its shared fixtures load once (a session fixture loads once per worker).
test:
	@$(MAKE) --no-print-directory -j2 bootstrap postgres chromium conformance
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -n 3 --dist loadscope

# Every page as each role at 1400x900, by the browser test that checks them: screenshots/<role>/<page>.png
screenshots: setup chromium
	SCREENSHOTS=$(CURDIR)/screenshots $(BIN)/python -m pytest tests/e2e/test_every_page_in_browser.py -q

bench: setup postgres
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(CONFORMANCE_VENV) tests/conformance/node/node_modules .pytest_cache .ruff_cache
