# Two commands do all the set-up on a fresh machine:
#   make serve   -- create .venv, install, start the server + web demo on http://127.0.0.1:8765/
#   make test    -- create .venv, install (and espeak-ng), lint (ruff, import layers), run the whole test suite
#   make test-fast -- the same set-up, then the tests not marked slow (a couple of minutes)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dauys
TEST_STAMP := $(VENV)/.installed-dauys-test

.PHONY: serve test test-fast lint install system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# The tests also run the LLM backends and Piper for real (tiny models made by the tests).
# torch first, pinned: its CPU build lies on this machines' disk; an unpinned torch pulls a CUDA build.
# Piper's worker is its own GPL-3.0 distribution (piper-worker/), installed before the tts extra that asks for it.
$(TEST_STAMP): $(STAMP) piper-worker/pyproject.toml piper-worker/piper_worker/__main__.py
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PY) -m pip install --quiet ./piper-worker
	$(PY) -m pip install --quiet -e '.[test,llm,tts,finetune]'
	touch $(TEST_STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/dauys serve $(ARGS)

system-deps:
	@bash scripts/install_system_deps.sh

# Lint first (seconds): ruff (pyproject [tool.ruff]) and the import-linter layer contract (pyproject [tool.importlinter]).
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: $(TEST_STAMP) system-deps lint
	$(PY) -m pytest $(ARGS)

# the quick loop while developing; CI runs `make test`, the whole suite
test-fast: $(TEST_STAMP) system-deps
	$(PY) -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) scripts/bench_asr.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
