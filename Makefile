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

# tests/integration/test_checkout_api.py runs in its own process: after the earlier integration
# modules in one process its servers and its in-process probe disagree (an order dependence not
# found yet; the module passes alone and after each half of them). Both runs must pass.
ISOLATED = tests/integration/test_checkout_api.py
test: venv
	$(BIN)/python -m pytest -q --ignore=$(ISOLATED) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q $(ISOLATED) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check features models training serving offers tests bench
	$(BIN)/ruff format --check features models training serving offers tests bench

bench: venv
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) .offers .pytest_cache
