# Entry points. `make demo` and `make test` are the README's first two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sglbench-installed
REQS := requirements.txt requirements-sglang.txt requirements-dev.txt pyproject.toml

.PHONY: setup test lint unit demo clean

setup: $(STAMP)

# Idempotent: re-runs only when a requirements file changed.
$(STAMP): $(REQS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-sglang.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup
	$(VENV)/bin/invoke demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .sglbench build *.egg-info
