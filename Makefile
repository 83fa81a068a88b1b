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
	$(BIN)/aiprod-post plan $(EXAMPLE)
	$(BIN)/aiprod-post render $(EXAMPLE) -o $(OUT)

test:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV) --extras test
	$(BIN)/python -m pytest -q

bench:
	$(PYTHON) scripts/bootstrap.py --venv $(VENV) --extras test,bench
	$(BIN)/python benchmarks/bench_planner.py
	taskset -c 0 $(BIN)/python benchmarks/bench_loudness.py
	taskset -c 0 $(BIN)/python benchmarks/bench_animatic.py
	taskset -c 0 $(BIN)/python benchmarks/bench_lut.py
	$(BIN)/python benchmarks/bench_conform.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
