# Everything runs from a project-local virtual environment, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run migrate test check lint typecheck pytest format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/chatkit-backend migrate

run: migrate
	$(BIN)/chatkit-backend serve

lint: $(STAMP)
	$(BIN)/ruff check src tests alembic
	$(BIN)/ruff format --check src tests alembic

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

pytest: $(STAMP)
	$(BIN)/pytest

test: check pytest

format: $(STAMP)
	$(BIN)/ruff format src tests alembic
	$(BIN)/ruff check --fix src tests alembic

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
