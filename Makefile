# Two commands on a fresh clone:  make demo  |  make test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export HF_HUB_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 240

.PHONY: setup demo test test-fast bench pipeline clean-demo

# torch is pinned first through constraints.txt: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 2>&1 | grep -v 'is ignored' || true
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | grep -v 'is ignored' || true
	$(BIN)/python -c "import editr1, torch, prefect, mlflow, dvc, duckdb" 
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/editr1 demo --storage storage/demo --json storage/demo-summary.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/curate.py

pipeline: $(STAMP)
	$(BIN)/python flows/pipeline.py

clean-demo:
	rm -rf storage/demo storage/demo-summary.json
