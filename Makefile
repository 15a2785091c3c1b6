# driftloop — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up demo test test-unit test-integration lint schemas bench-serving bench-loop bench-monitoring clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install driftloop with its dev tools

up: $(STAMP)  ## embedded broker + the five services; Ctrl-C stops everything
	$(BIN)/driftloop up

demo: $(STAMP)  ## watch the loop close on a drifting stream (private ports, < 3 min)
	$(BIN)/driftloop demo

test: $(STAMP)  ## every test: unit, then integration against the embedded broker
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)  ## ruff + mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/mypy contracts shared services cli

WRK = @command -v wrk >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; }

bench-serving: $(STAMP)  ## serving's rps/latency per delivery mode, events counted on the topic (~3 min)
	$(WRK)
	$(BIN)/python -m bench.serving.run

bench-loop: $(STAMP)  ## loop quality on River's drifting streams vs ARF and a static model (~30 min; ARGS="--streams sine --rates 200")
	$(BIN)/python -m bench.loop.run $(ARGS)

bench-monitoring: $(STAMP)  ## events/s one monitoring worker takes (in memory, with its changelog) vs a plain aiokafka loop and serving's peak (~4 min; ARGS="--events 20000")
	$(WRK)
	$(BIN)/python -m bench.monitoring.run $(ARGS)

schemas: $(STAMP)  ## regenerate contracts/schemas after changing a contract
	$(BIN)/python -m contracts.export

clean:
	rm -rf .driftloop .pytest_cache .mypy_cache .ruff_cache
