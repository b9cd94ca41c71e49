# The two commands: `make run` and `make test`. Everything else here serves them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint format setup bench clean messages gates

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

# Translations (.po, in git) compiled to .mo (not in git) with Babel, so no gettext install
# is needed.
messages: $(STAMP)
	$(BIN)/pybabel compile --use-fuzzy -d scheduler/locale -D django --statistics

setup: $(STAMP) messages
	mkdir -p var/broker/out var/broker/processed
	$(BIN)/python manage.py migrate --noinput
	DEBUG=true $(BIN)/python manage.py load_demo

# Web app on http://127.0.0.1:8000, a Celery worker and Celery beat, on SQLite (WAL) and the
# filesystem broker under ./var unless DATABASE_URL / REDIS_URL say otherwise.
run: setup
	DEBUG=true $(BIN)/honcho --procfile Procfile.dev start

# ical.js, the iCalendar parser inside Thunderbird, is one of the four readers
# tests/calendars/test_readers.py checks every calendar with: it misread feeds that icalendar,
# the library we build them with, read right. Pinned by the committed lockfile. Without npm (a
# laptop without node) that test skips and says why; in CI (CI=true) it fails instead.
ICALJS := tests/calendars/readers/node_modules/.package-lock.json

$(ICALJS): tests/calendars/readers/package.json tests/calendars/readers/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/calendars/readers --no-audit --no-fund; \
	else \
		echo "npm not found: the ical.js reader test will skip (CI=true: fail)"; \
	fi

# The suite on every core (pytest-xdist); the tests that share Redis and Celery workers, live
# servers and Chromium, or the gates' caches run in a group per kind, each on one worker in
# turn (tests/conftest.py groups them).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto
test: $(STAMP) messages $(ICALJS)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

# The release gates on their own (`make test` runs them too, as tests/test_gates.py and
# tests/test_deploy.py): lint, types and import rules; bandit over our code; pip-audit against
# the offline advisory database in deploy/advisories/; the compose file against the Compose
# schema and the Caddyfile through `caddy adapt`.
gates: lint
	$(BIN)/bandit -c pyproject.toml -r config trials participants scheduler seeds deploy -q
	$(BIN)/python deploy/audit_dependencies.py
	$(BIN)/pytest -q -p no:cacheprovider tests/test_gates.py tests/test_deploy.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every script in bench/ against the machine's Postgres and Redis (unless DATABASE_URL / REDIS_URL
# say otherwise): one table, bench/results.json, plots in bench/out/. FULL=1 adds the long sizes
# (enrollment at 10,000 and 100,000 participants: hours); SMALLEST=1 checks the harness quickly.
bench: $(STAMP)
	DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/scheduler_bench}" \
	REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:6379/0}" \
	$(BIN)/python bench/run.py $(if $(FULL),--full) $(if $(SMALLEST),--smallest)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf tests/calendars/readers/node_modules
