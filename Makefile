# One command each: `make run` (see README) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench-ingest bench-predict clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

FLASK := $(VENV)/bin/flask --app web

# preflight: PostgreSQL and Redis answer, or it says which does not and how to start it.
# exec: honcho takes make's place, so Ctrl-C and SIGTERM reach it directly.
run: install
	@$(FLASK) preflight
	$(FLASK) create-database
	$(FLASK) db upgrade
	$(FLASK) models train-demo --if-empty
	@$(FLASK) urls
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/honcho start -f Procfile

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench-ingest: install
	$(PY) bench/ingest.py

bench-predict: install
	$(PY) bench/predict.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts *.egg-info
