# Two commands do all the set-up on a fresh machine with Python 3.10+ (README.md):
#   make tune    run the search (python -m fashion_exp tune) on ../shared's data and weights when they are there
#   make test    lint and run the tests (CI runs exactly this)
# Each builds .venv from requirements.lock the first time, and again whenever the lock or pyproject.toml changes.
# Pass overrides with ARGS: make tune ARGS="tuner.max_trials=5"; make test ARGS="-k serve -n 0".

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SHARED := ../shared
export PATH := $(abspath $(VENV))/bin:$(PATH)

# The shipped data and weights beside the project, unless the user points elsewhere.
ifndef FASHION_DATA
ifneq ($(wildcard $(SHARED)/data/clothing-dataset-small/train),)
export FASHION_DATA := $(abspath $(SHARED)/data/clothing-dataset-small)
endif
endif
ifndef FASHION_WEIGHTS
ifneq ($(wildcard $(SHARED)/weights/xception_notop.weights.h5),)
export FASHION_WEIGHTS := $(abspath $(SHARED)/weights/xception_notop.weights.h5)
endif
endif

.PHONY: tune test venv lock system-deps

tune: $(STAMP)
	python -m fashion_exp tune $(ARGS)

test: $(STAMP) system-deps
	ruff check fashion_exp tests benchmarks
	ruff format --check fashion_exp tests benchmarks
	python -m pytest -q $(ARGS)

venv: $(STAMP)

# A new environment each time: packages a previous lock installed cannot linger.
$(STAMP): requirements.lock pyproject.toml
	@bash scripts/venv.sh "$(PYTHON)" "$(VENV)"

# Refresh the lock from the registry (then `make test` must pass before committing it).
lock:
	bash scripts/lock.sh

# Debian's chromium and postgresql for the browser and tracking-server tests (they skip without them).
system-deps:
	@bash scripts/system-deps.sh
