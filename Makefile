# The two commands: `make demo` and `make test`. Each sets up .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recscope-installed
# Airflow pins SQLAlchemy < 2 and Flask 2.2, which clash with the project's dependencies, so
# the Airflow end-to-end test gets its own venv (Airflow 2.10.5 from a pinned set).
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.recscope-installed

.PHONY: demo test lint bench clean airflow

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml (torch==2.13.0).
	$(BIN)/python -m pip install -e '.[dev,spark,text]'
	touch $(STAMP)

$(AIRFLOW_STAMP): src/recscope/orchestration/airflow_constraints.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -c src/recscope/orchestration/airflow_constraints.txt 'apache-airflow==2.10.5'
	touch $(AIRFLOW_STAMP)

airflow: $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(BIN)/recscope demo

test: $(STAMP) $(AIRFLOW_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) recscope-out .pytest_cache
