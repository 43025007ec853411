# make demo : create .venv, install, run the bundled digits grid, print its tables (~3 min first time)
# make test : create .venv, install, run the test suite (~17–23 min on 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

# re-install when the project's dependencies change
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/unlearn-grid run demo
	$(BIN)/unlearn-grid tables demo --out unlearn-grid/tables/demo
	@echo "MLflow UI on these runs: $(BIN)/unlearn-grid ui   (then open http://127.0.0.1:5000)"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf unlearn-grid tables
