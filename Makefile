# Every target bootstraps .venv first (scripts/bootstrap.sh), so each works on a fresh clone.
PY := .venv/bin/python
STUDY ?= mnist
ARGS ?=

.PHONY: bootstrap run test lint bench bench-workers

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap  ## the main job: make run [STUDY=mnist] [ARGS="--n-trials 10"]
	$(PY) -m autotune.run --study $(STUDY) $(ARGS)

test: bootstrap
	$(PY) -m pytest $(ARGS)

lint: bootstrap
	$(PY) -m ruff check autotune tests scripts
	$(PY) -m mypy autotune

bench: bootstrap  ## CPU benchmarks against Optuna's PyTorch example (~30 min; idle machine)
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_blocks.py
	$(PY) scripts/bench_study.py
	$(PY) scripts/bench_routes.py

bench-workers: bootstrap  ## 1/2/4/8 workers: SQLite, PostgreSQL, Ray, gRPC proxy (~20 min)
	$(PY) scripts/bench_workers.py
