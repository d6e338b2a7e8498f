# `make demo` and `make test` create .venv when missing and install the locked environment.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow benchmark clean-venv

$(STAMP): requirements.lock requirements-nodeps.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.generate

test: $(STAMP)
	$(PY) -m pytest -q -rs -n 2 -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

benchmark: $(STAMP)
	$(PY) -m experiments.benchmark_warp

clean-venv:
	rm -rf $(VENV)
