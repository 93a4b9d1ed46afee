# The two commands a user needs: `make run` and `make test`. Each one creates the virtual
# environment and installs the package when needed; the database starts on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint stop install clean-db bench bench-scale bench-jobs storm faults

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

# Benchmarks (not part of `make test`, which runs them once at a tiny scale). Sizes are
# MeFiles; populations are about twice that. Logs go to bench-log.jsonl.
SIZES ?= 5000,50000,500000
bench: $(STAMP)
	$(BIN)/qlarius-jobs bench --sizes $(SIZES) --output bench-results.json 2> bench-log.jsonl

# The cost curve (README "Performance"): populate, backfill and sync at growing sizes, each
# size's data set kept in a template database so that a second run skips its generation.
SCALE_SIZES ?= 20000,200000,2000000
bench-scale: $(STAMP)
	$(BIN)/qlarius-jobs bench-scale --sizes $(SCALE_SIZES) --output bench-scale-results.json 2> bench-scale-log.jsonl

# The job table at scale (README "Performance"): fetches, console pages, /metrics and the
# prune against JOBS finished jobs (a 10M fill takes minutes and ~6 GiB). `make test` runs
# it once at a tiny scale.
JOBS ?= 10000000
bench-jobs: $(STAMP)
	$(BIN)/qlarius-jobs bench-jobs --jobs $(JOBS) --output bench-jobs-results.json 2> bench-jobs-log.jsonl

# The storm (README "Concurrency"): 3 minutes of concurrent load, a worker killed midway,
# then every invariant checked against an independent reference; then the same through
# PgBouncer in transaction mode. `make test` runs a short one of each.
STORM_SECONDS ?= 180
storm: $(STAMP)
	$(BIN)/qlarius-jobs storm --seconds $(STORM_SECONDS)
	$(BIN)/qlarius-jobs storm --seconds $(STORM_SECONDS) --pooler

# The fault tests (README "Operations"): restart, crash and starve a throwaway server under
# real workers, kill workers mid-job; each scenario prints its figures. `make test` runs the
# short version.
faults: $(STAMP)
	$(BIN)/qlarius-jobs faults
