# make demo : create .venv, install, run the bundled digits grid, print its tables (~3 min first time)
# make test : create .venv, install, run the test suite (~17–27 min on 2 cores)
# make ui-check : the MLflow UI in headless Chromium (bench/ui_check.py; needs `chromium`, not in `make test`)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test ui-check clean

setup: $(VENV)/.installed

# re-install when the project's dependencies change
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/unlearn-grid run demo
	$(BIN)/unlearn-grid tables demo --out unlearn-grid/tables/demo
	@echo "MLflow UI on these runs: $(BIN)/unlearn-grid ui demo   (open the address it prints)"

test: setup
	$(BIN)/python -m pytest -q

# Chromium is not installed by `setup` (Debian: apt-get install chromium): the check fails without it
ui-check: setup
	$(BIN)/python bench/ui_check.py --out unlearn-grid/ui-check

clean:
	rm -rf unlearn-grid tables
