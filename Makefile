# The two commands the README leads with. Each does all set-up first (idempotent).
.PHONY: run test setup lint bench clean

VENV ?= .venv
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

setup:
	@bash scripts/setup.sh

run: setup
	@$(VENV)/bin/wirewatch demo

test: setup
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	-$(VENV)/bin/wirewatch stack down
