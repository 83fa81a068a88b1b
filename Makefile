# The two commands a new user runs: `make demo` and `make test`.
# Each one creates .venv, installs what it needs from package registries, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/the_last_ferry.fountain
OUT ?= out/demo

.PHONY: demo test bench venv clean

venv:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV)

demo:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV)
	$(BIN)/aiprod-post plan $(EXAMPLE) -o $(OUT)/plan.json
	$(BIN)/aiprod-post plan $(OUT)/plan.json

test:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV) --extras test
	$(BIN)/python -m pytest -q

bench:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV) --extras test
	$(BIN)/python benchmarks/bench_planner.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
