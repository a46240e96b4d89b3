# The two commands: `make demo` and `make test`. Each sets up .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recscope-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml (torch==2.13.0).
	$(BIN)/python -m pip install -e '.[dev,spark,text]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recscope demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) recscope-out .pytest_cache
