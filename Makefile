# make demo : create .venv, install, run the bundled digits grid, print its tables (~3 min first time)
# make test : create .venv, install, run the fast tier of the tests (see README for its measured time)
# make test-all : the fast tier, then the system tier (multi-node Ray, autoscaler, PostgreSQL, S3, kills, outages)
# make test-system : the system tier alone
# make mutants : apply each wiring bug of tests/mutants.py and check that its test fails (~10 min)
# make ui-check : the MLflow UI in headless Chromium (bench/ui_check.py; needs `chromium`, not in the tests)
# make lock : rewrite requirements.lock, the exact versions `setup` and the Dockerfile install (tools/lock.py)
# make docs : the documentation site (docs/, mkdocs.yml) built with `mkdocs build --strict` into site/
# make readme : run the demo, its figures, and rewrite README's demo tables and picture (docs/readme_assets.py)
# PYTEST_FLAGS: extra pytest options, e.g. PYTEST_FLAGS=--random-order-seed=7 (.ci/run passes a fresh seed)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_FLAGS ?=

.PHONY: setup lock demo test test-system test-all mutants ui-check docs readme clean

setup: $(VENV)/.installed

# re-install when the project's dependencies change: the exact versions of requirements.lock (what the
# image installs), then the project itself with --no-deps (it adds nothing to the lock; its build backend
# is the lock's setuptools), then pip check over the whole environment
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# requirements.lock from a fresh environment (tools/lock.py): keeps the locked versions and resolves only
# what pyproject.toml adds; `make lock LOCK_CONSTRAINTS=` resolves everything afresh (the newest allowed)
LOCK_VENV ?= build/lock-venv
LOCK_CONSTRAINTS ?= -c requirements.lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade $(LOCK_CONSTRAINTS) pip setuptools
	$(LOCK_VENV)/bin/pip install --quiet $(LOCK_CONSTRAINTS) -e ".[test,docs,cluster,mnist5k]"
	$(LOCK_VENV)/bin/python tools/lock.py > requirements.lock.new
	mv requirements.lock.new requirements.lock

demo: setup
	$(BIN)/unlearn-grid run demo
	$(BIN)/unlearn-grid tables demo --out unlearn-grid/tables/demo
	@echo "MLflow UI on these runs: $(BIN)/unlearn-grid ui demo   (open the address it prints)"

test: setup
	$(BIN)/python -m pytest -m "not system" $(PYTEST_FLAGS)

test-system: setup
	$(BIN)/python -m pytest -m system $(PYTEST_FLAGS)

test-all: test test-system

mutants: setup
	$(BIN)/python tests/mutants.py

# Chromium is not installed by `setup` (Debian: apt-get install chromium): the check fails without it
ui-check: setup
	$(BIN)/python bench/ui_check.py --out unlearn-grid/ui-check

docs: setup
	$(BIN)/mkdocs build --strict --site-dir site

# the figure and tables README shows, from a real demo run (tests/test_docs.py checks their structure)
readme: demo
	$(BIN)/unlearn-grid figures demo --out unlearn-grid/figures/demo
	$(BIN)/python docs/readme_assets.py

clean:
	rm -rf unlearn-grid tables site
