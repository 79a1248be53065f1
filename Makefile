# Two commands for a newcomer: `make demo` (the example DAGs against the local emulator) and `make test`.
# Both create the virtual environment they need from the pinned requirements.

PYTHON ?= python3
AIRFLOW ?= 3.3
VENV ?= .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
ARGS ?=

# Airflow imports take seconds without bytecode caching; the tests spawn many Python processes.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck unit system-test bench bench-smoke venv pins clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"

$(VENV)/.installed-$(AIRFLOW): $(UV) requirements/airflow-$(AIRFLOW).txt pyproject.toml
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements/airflow-$(AIRFLOW).txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(AIRFLOW)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not system" $(PYTEST_ARGS)

system-test: venv
	$(PY) -m pytest -m system $(PYTEST_ARGS)

demo: venv
	$(PY) -m example_dags.run_demo $(ARGS)

bench: venv
	$(PY) -m benchmarks.run_all $(ARGS)

# Regenerates every requirements/*.txt from pyproject.toml (the commands are in requirements/pins.py); pins still
# allowed are kept, so after adding a dependency or an extra only the new packages resolve. ARGS=--upgrade: all anew.
pins: $(UV)
	$(PYTHON) requirements/pins.py --uv $(UV) $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .venv-* .pytest_cache .mypy_cache .ruff_cache .demo
