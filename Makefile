# Everything runs from a project-local virtual environment, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: serving (`make run`) needs only the package; the tools (the `dev` extra:
# pytest, mypy, ruff, Playwright, Hypothesis) add about a minute to a first start, so
# only the targets that use them install them. `make install` is everything.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: install run migrate test check lint typecheck pytest format clean bench

install: $(STAMP)

$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

# The dev extra includes the package, so it stands for the runtime stamp as well.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME_STAMP) $(STAMP)

migrate: $(RUNTIME_STAMP)
	$(BIN)/chatkit-backend migrate

run: migrate
	$(BIN)/chatkit-backend serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench alembic
	$(BIN)/ruff format --check src tests bench alembic

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

# The suite mostly waits (on servers starting, sockets, timeouts), so it runs in worker
# processes (pytest-xdist): each worker has its own databases, ports, Redis prefixes and
# temporary folders. `--dist loadfile` keeps a file's tests on one worker, in order, with
# its module-scoped servers started once; files go out in collection order, where
# tests/conftest.py puts the ones that start servers first. More workers than 2 overload
# a 2-core machine until the tests that bound a recovery time fail; `make pytest
# PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: system-deps check pytest

# What tests run besides Python: Debian's Chromium for the browser tests (Playwright
# cannot download its own here), Debian's nginx, which the proxy tests put in front
# of the server with docker/nginx/, and redis-server, which the replica tests start
# (and stop) beside the shared Redis. CI installs them; locally those tests skip without.
.PHONY: system-deps browser-deps
system-deps:
	@if [ -n "$$CI" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/sbin/nginx ] || \
			[ ! -x /usr/bin/redis-server ]; }; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y chromium fonts-liberation nginx redis-server; \
	fi
browser-deps: system-deps

# The reliability suite's long run (docs/reliability.md): the same tests as in `make
# test`, with many more users, turns, hang-ups, kills and generated cases.
.PHONY: test-long
test-long: $(STAMP)
	RELIABILITY_LONG=1 $(BIN)/pytest -m reliability

# The benchmark suite (see docs/benchmarks.md): quick by default,
# `make bench BENCH_ARGS=--full` for the sizes the targets name.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff format src tests bench alembic
	$(BIN)/ruff check --fix src tests bench alembic

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
