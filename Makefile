# make test: a virtualenv in .venv, the package and its test dependencies, lint (ruff, mypy --strict), the whole suite.
# make demo: the pipeline end to end against the fake Bento (never a real account).
# make bench: the benchmark table (bench/RESULTS.md); make bench-smoke: the same at small sizes, for CI.
# make bench-admin: admin page timings with 100,000 dead letters.
# make matrix: the whole suite on every supported-version combination (noxfile.py; NOX_ARGS="-s oldest" for one).
# make chaos: a seeded, randomized fault campaign against real workers, beat, Redis and the fake Bento,
#   then checks and a table; exit status 1 if a check fails. make chaos SEED=42 MINUTES=20 for a longer one.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
NOX_ARGS ?=

.PHONY: install test lint demo bench bench-smoke bench-admin matrix chaos clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("bento-tasks needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

bench-smoke: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --smoke
	$(BIN)/python -m bench.admin_pages --smoke

bench-admin: $(STAMP)
	$(BIN)/python -m bench.admin_pages

matrix: $(STAMP)
	$(BIN)/nox $(NOX_ARGS)
SEED ?=
MINUTES ?= 5
chaos: $(STAMP)
	$(BIN)/python -m chaos $(if $(SEED),--seed $(SEED)) --minutes $(MINUTES)

clean:
	rm -rf $(VENV) .nox build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
