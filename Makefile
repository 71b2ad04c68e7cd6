# replib: the sparse-training replication book.
#   make book                 build the HTML book from the executed notebooks in book/ (no training)
#   make test                 lint, unit tests, nbval of every notebook at the smoke budget,
#                             book build with warnings as errors, headless-Chromium check
#   make reproduce BUDGET=cpu [WORKERS=N]  plan every notebook's runs, execute the missing ones
#                             (on Ray when WORKERS>1 or RAY_ADDRESS is set), render the notebooks
#                             with papermill, then build the book
#   make bench                throughput benchmarks (ratios against baselines)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUDGET ?= $(shell $(BIN)/python -c "import torch; print('paper' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
WORKERS ?= 1
NOTEBOOKS := $(sort $(wildcard notebooks/*/[0-9]*.ipynb))
MATHJAX := book/_vendor/mathjax/tex-chtml.js
export PYTHONHASHSEED := 0

.PHONY: all venv lint unit nbval book book-check test reproduce bench clean

all: book

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

$(MATHJAX):
	# MathJax 3 vendored from the npm registry so equations render offline.
	rm -rf .cache/mathjax && mkdir -p .cache/mathjax book/_vendor
	cd .cache/mathjax && npm pack --silent mathjax@3 >/dev/null && tar xzf mathjax-*.tgz
	rm -rf book/_vendor/mathjax && cp -r .cache/mathjax/package/es5 book/_vendor/mathjax

lint: venv
	$(BIN)/ruff check src tests benchmarks

unit: venv
	# the Ray tests run in a pytest process of their own: a process that hosted a Ray driver
	# can segfault later (ray-project/ray#31145), so no other test may share it
	$(BIN)/python -m pytest -q -m "not ray" tests
	$(BIN)/python -m pytest -q -m ray tests

nbval: venv
	# smoke records and checkpoints are thrown away first so every code path really runs.
	# Checkpoint folders are named by run id or hash, not by budget (acnn's cached dense
	# networks, per-run folders), so nbval keeps all of its checkpoints under a folder of their
	# own (REPLIB_CHECKPOINTS) and removes it whole; the cpu/paper ones are never touched.
	# data/checkpoints/*/trained/smoke: l0's trained smoke networks of other smoke runs.
	rm -rf data/results/smoke data/checkpoints/smoke data/checkpoints/*/trained/smoke
	REPLIB_CHECKPOINTS=$(CURDIR)/data/checkpoints/smoke \
	  $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)

book: venv $(MATHJAX)
	$(BIN)/python -m replib.experiments.scorecard book
	$(BIN)/python benchmarks/report.py book
	$(BIN)/jupyter-book build book -W -n --keep-going

book-check: venv
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/python tests/book_check.py book/_build/html

test: lint unit nbval book book-check

reproduce: venv
	$(BIN)/python -m replib.experiments.reproduce --budget $(BUDGET) --workers $(WORKERS) $(NOTEBOOKS)
	$(MAKE) book

bench: venv
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf book/_build .cache data/results/smoke data/checkpoints/smoke
