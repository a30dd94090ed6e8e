# The two commands: `make demo` (the whole product, end to end) and `make test`.
# Both set everything up on a fresh machine and are safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: bootstrap demo test bench lint down status clean

$(BIN)/python:
	@echo "==> creating virtualenv $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing sinkfleet and its dev extras"
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

bootstrap: $(STAMP)
	@./scripts/install-system-deps.sh

demo: bootstrap          ## stack up, topics, migrations, 100k events, 2 workers, summary
	$(BIN)/sinkfleet demo

test: bootstrap          ## the whole suite against a real Kafka, PostgreSQL and Redis
	$(BIN)/pytest -ra

bench: bootstrap         ## end-to-end benchmark, prints ratios
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/sinkfleet stack up
	$(BIN)/python benchmarks/e2e_events.py

lint: bootstrap
	$(BIN)/ruff check sinkfleet tests benchmarks
	$(BIN)/mypy sinkfleet

status:
	$(BIN)/sinkfleet stack status

down:
	$(BIN)/sinkfleet stack down

clean: down
	rm -rf .sinkfleet
