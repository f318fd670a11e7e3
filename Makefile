# The README's two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= deploy/demo.toml
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml setup.py gateway/media/fastpath.c gateway/media/fastpath_build.py | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

keys/ca.crt: | $(VENV)/.installed
	$(BIN)/srtpgw keys init --dir keys

keys/admin.token: | keys/ca.crt
	$(BIN)/srtpgw keys token --dir keys

run: $(VENV)/.installed keys/ca.crt keys/admin.token
	$(BIN)/srtpgw run -c $(CONFIG)

test: $(VENV)/.installed
	$(BIN)/ruff check gateway tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check gateway tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
