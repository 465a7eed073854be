# The two commands: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PURE_TESTS := test_one_pass_batch.py test_hostile_protocol.py test_drivers.py test_prepared.py test_errors.py

.PHONY: run test lint fault bench clean compiled

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,compile]'
	touch $(STAMP)

# The statement hot path compiled with mypyc (tools/compile.py): quick when up to
# date; on any failure the same modules run as pure Python.
compiled: $(STAMP)
	$(BIN)/python tools/compile.py

run: $(STAMP) compiled
	$(BIN)/nodedb-server --config config/nodedb.toml $(ARGS)

# The suite runs on the compiled hot path; then the protocol and statement tests run
# again on the same sources as plain Python, the reference it must match.
test: $(STAMP) compiled
	tests/ensure_tools.sh
	$(BIN)/pytest -q -x --durations=10 tests
	NODEDB_PURE_PYTHON=1 $(BIN)/pytest -q -x tests/unit $(addprefix tests/integration/,$(PURE_TESTS))

fault: $(STAMP) compiled
	NODEDB_FAULT_CYCLES=25 NODEDB_FUZZ_EXAMPLES=20000 $(BIN)/pytest -q -m fault tests

lint: $(STAMP)
	$(BIN)/ruff check nodedb_server tests bench tools
	$(BIN)/ruff format --check nodedb_server tests bench tools
	$(BIN)/mypy

bench: $(STAMP) compiled
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info nodedb_server/_compiled .pytest_cache .mypy_cache .ruff_cache
