# The two commands a user needs: `make run` and `make test`. Each one creates the virtual
# environment and installs the package when needed; the database starts on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint stop install clean-db

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/qlarius-jobs run

test: $(STAMP)
	$(BIN)/ruff check qlarius_jobs tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check qlarius_jobs tests

stop: $(STAMP)
	$(BIN)/qlarius-jobs db stop

# Stops the embedded cluster and deletes its data.
clean-db: stop
	rm -rf .pgdata
