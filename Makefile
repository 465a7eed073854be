# The two commands: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fault bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nodedb-server --config config/nodedb.toml $(ARGS)

test: $(STAMP)
	tests/ensure_tools.sh
	$(BIN)/pytest -q -x --durations=10 tests

fault: $(STAMP)
	NODEDB_FAULT_CYCLES=25 NODEDB_FUZZ_EXAMPLES=20000 $(BIN)/pytest -q -m fault tests

lint: $(STAMP)
	$(BIN)/ruff check nodedb_server tests bench
	$(BIN)/ruff format --check nodedb_server tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
