# The two set-up commands: `make demo` (end to end on real data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/fashion-mnist-lt

.PHONY: demo test install lint benchmarks clean

$(BIN)/longtail: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/longtail

## demo: build Fashion-MNIST-LT, run experiments/demo.yaml through kfp.local, score the submission
demo: install
	$(BIN)/longtail data fashion-mnist-lt $(DATA)
	$(BIN)/longtail run experiments/demo.yaml --data $(DATA)/train --test $(DATA)/test --labels $(DATA)/test_labels.csv

## test: unit and integration tests
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src components pipelines tests benchmarks

benchmarks: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf .longtail build *.egg-info
