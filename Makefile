# Every target bootstraps .venv first (scripts/bootstrap.sh), so each works on a fresh clone.
PY := .venv/bin/python
STUDY ?= mnist
ARGS ?=

.PHONY: bootstrap run test lint bench

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap  ## the main job: make run [STUDY=mnist] [ARGS="--n-trials 10"]
	$(PY) -m autotune.run --study $(STUDY) $(ARGS)

test: bootstrap
	$(PY) -m pytest $(ARGS)

lint: bootstrap
	$(PY) -m ruff check autotune tests scripts
	$(PY) -m mypy autotune
