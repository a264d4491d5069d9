# torchsurgeon: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# two pytest-xdist workers, one torch thread each (tests/conftest.py); a test's xdist_group runs in one worker,
# one test after another (a zoo module's shared cache; the models too large for two in memory at once).
# `make test XDIST=` runs everything in one process.
XDIST ?= -n 2 --dist loadgroup

.PHONY: venv demo test check lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	command -v dot >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
		|| echo "graphviz (dot) not installed: picture tests will be skipped"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/vulture src tools/vulture_whitelist.py --min-confidence 60

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

test: lint typecheck pytest

# the fast tier for the inner loop (under 90 s): lint and every test but the model zoos, the tests that
# start processes or many threads, and those that train or compare whole real models (markers in pyproject.toml)
check: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(PY) -m pytest -q -n 2 -m "not zoo and not slow" --ignore-glob='tests/test_zoo_*'

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
