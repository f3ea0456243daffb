# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   simulate -> features -> train -> MLflow registry -> serve -> sample requests
#   make test   mypy on the packages and the whole test suite (fails if either fails)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,spark,train,serve
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test typecheck lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(BIN)/offers demo $(DEMO_ARGS)

# mypy, then the suite even when mypy failed (a type error does not hide the tests' results);
# the target fails if either failed.
test: venv
	@rc=0; \
	echo "$(BIN)/mypy"; $(BIN)/mypy || rc=$$?; \
	echo "$(BIN)/python -m pytest -q $(PYTEST_ARGS)"; $(BIN)/python -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	exit $$rc

# The packages to check, the pydantic plugin and the options are [tool.mypy] in pyproject.toml.
typecheck: venv
	$(BIN)/mypy

lint: venv
	$(BIN)/ruff check features models training serving offers tests bench
	$(BIN)/ruff format --check features models training serving offers tests bench

bench: venv
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) .offers .pytest_cache .mypy_cache
