# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   simulate -> features -> train -> MLflow registry -> serve -> sample requests
#   make test   the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,spark,train,serve
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test lint bench venv clean

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

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check features models training serving offers tests bench
	$(BIN)/ruff format --check features models training serving offers tests bench

bench: venv
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) .offers .pytest_cache
