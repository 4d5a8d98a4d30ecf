# One command each: `make run` (see README) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint docs docs-serve bench-ingest bench-ingest-durability bench-peers bench-timeline bench-scale bench-compare bench-soak clean

install: $(STAMP)

# A line per step, and pip's own progress (its lines and bars) on a terminal; where no one
# watches (CI logs, a pipe) pip stays quiet: a bar there is noise, hundreds of lines. The
# editable install is quick and says only setuptools' notes on editable installs: its
# errors alone show (-qq).
$(STAMP): requirements.txt pyproject.toml
	@set -e; began=$$SECONDS; pip_output=--quiet; if [ -t 1 ]; then pip_output=--progress-bar=on; fi; \
	say() { echo "make install: $$*"; }; \
	if ! test -x $(PY); then say "creating the virtualenv $(VENV) ..."; python3 -m venv $(VENV); fi; \
	say "1/3 upgrading pip ..."; \
	$(PY) -m pip install $$pip_output --upgrade pip; \
	say "2/3 the pinned requirements (requirements.txt; a few minutes the first time) ..."; \
	$(PY) -m pip install $$pip_output -r requirements.txt; \
	say "3/3 this project, editable (pip install -e .) ..."; \
	$(PY) -m pip install --quiet --quiet --no-deps -e .; \
	touch $(STAMP); \
	say "done in $$((SECONDS - began)) s: $(VENV) is ready"


# devstack: PostgreSQL and Redis answer (or, when no variable names them, private ones
# start under data/), create the database, migrate, demo models, then the Procfile under
# honcho. exec: it takes make's place, so Ctrl-C and SIGTERM reach it directly.
run: install
	@exec $(PY) -m devstack

# A demo bot trading on the demo models against a running `make run` stack (its broker,
# private or not, and its web URL); DEMO_ARGS passes options, e.g.
# make demo DEMO_ARGS="--rate 5 --trades 20".
demo: install
	@exec $(PY) -m devstack.demo $(DEMO_ARGS)

# The suite in TEST_PROCESSES pytest-xdist processes (tests/support/xdist_scopes.py says how
# they share it); 1 is a plain serial run (-n 0: xdist's -n 1 would still start a worker).
TEST_PROCESSES ?= 2

test: lint docs
	$(VENV)/bin/pytest -n $(if $(filter 1,$(TEST_PROCESSES)),0,$(TEST_PROCESSES))

# ruff, then import-linter's contracts (pyproject.toml): which process's code imports which.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The documentation site (mkdocs.yml, docs/): built strictly, so a broken link, anchor or
# page fails it; its reference pages are generated from the code as it builds.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# A preview of the site on http://127.0.0.1:8000 that rebuilds as docs/ changes.
docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

bench-ingest: install
	$(PY) bench/ingest.py

# The journal against private redis-servers: appendfsync everysec, always, and no AOF.
bench-ingest-durability: install
	$(PY) bench/ingest.py --durability

# The stack against MLServer, the plan's FastAPI design and in-process Flask, one
# interleaved run (needs wrk). The peers run from a venv of their own, .venv-peers,
# built here from bench/requirements-peers.txt; BENCH_ARGS passes options, e.g.
# make bench-peers BENCH_ARGS="--rounds 1 --seconds 3 --cases xgb-5".
bench-peers: install .venv-peers/.installed
	test -x $(VENV)/bin/granian || $(PY) -m pip install --quiet granian==2.8.9
	$(PY) bench/peers.py $(BENCH_ARGS)

# Where one synchronous prediction spends its time, stage by stage, in the web and the
# predict worker (needs wrk); BENCH_ARGS passes options, e.g. a change against its parent:
# make bench-timeline BENCH_ARGS="--refs HEAD~1,worktree".
bench-timeline: install
	$(PY) bench/timeline.py $(BENCH_ARGS)

.venv-peers/.installed: bench/requirements-peers.txt
	test -x .venv-peers/bin/python || python3 -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet -r bench/requirements-peers.txt
	touch $@

# What reads and ingest cost as the journal grows (needs wrk): journals of 100k/1M and
# 1M/10M trades/predictions loaded server-side, the web and a trades worker as compose
# starts them; then bench-compare's run with its defaults (a million shadow pairs).
# BENCH_ARGS passes options to bench/scale.py only, e.g.
# make bench-scale BENCH_ARGS="--sizes 100k/1M --reuse" (BENCH_PG_URL: a TimescaleDB server,
# for both).
bench-scale: install
	$(PY) bench/scale.py $(BENCH_ARGS)
	$(PY) bench/compare_scale.py

# What a release's comparison (GET .../compare) costs at a million shadow pairs and 50k
# linked trades, on a scratch database (BENCH_PG_URL: a TimescaleDB server): the shadows
# logged through the log's write path, the trades folded, the kept read against the scan,
# and what the kept sums cost the log's writer; BENCH_ARGS passes options, e.g.
# make bench-compare BENCH_ARGS="--pairs 100k --trades 5k".
bench-compare: install
	$(PY) bench/compare_scale.py $(BENCH_ARGS)

# A lost worker, a Redis restart and a two-host database outage, repeated on fresh private
# stacks (a redis-server of its own, a scratch database); one line per run and a summary.
# BENCH_ARGS passes options, e.g. make bench-soak BENCH_ARGS="--runs 20 --keep-going".
bench-soak: install
	$(PY) bench/soak_outages.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache test-artifacts site *.egg-info
