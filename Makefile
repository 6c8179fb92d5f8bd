# SSIMQuality: two commands set everything up on a fresh machine.
#   make demo   creates .venv, installs the project, runs the demo
#   make test   creates .venv if missing, runs the test suite
#   make bench  writes bench.json (speed figures, CPU)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet -e ".[test,train]" -c requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssimquality demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python Testing/bench.py --out bench.json

clean:
	rm -rf demo-output bench.json .pytest_cache
