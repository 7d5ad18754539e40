# The two commands of the README's Quick start:
#   make demo   set up (venv, torch==2.13.0 CPU wheel, the package) and run the pipeline on examples/
#   make test   set up (plus the system packages the tests start for real) and run the tests
# Everything installs from PyPI and Debian's packages; nothing else is needed by hand.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

export HF_HUB_DISABLE_TELEMETRY := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup demo test check lint docs system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; otherwise a dependency would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/distill run --input examples/medquad-mini --format jsonl --format triplets

system-deps:
	bash scripts/install-system-deps.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/config_docs.py --check
	$(VENV)/bin/mypy

# README.md's Configuration section, regenerated from distiller/config.py.
docs: setup
	$(PY) scripts/config_docs.py

# Every test: unit, slow (real training, real servers) and e2e (PostgreSQL, a Prefect server, a worker).
test: setup system-deps lint
	$(VENV)/bin/pytest -q -ra

# The fast suite for day-to-day work: no slow and no e2e tests, no system packages needed.
check: setup
	$(VENV)/bin/pytest -q -ra -m "not slow and not e2e"

# Measurements, not tests (see benchmarks/README.md): LLM-layer throughput, mining cost against
# sentence-transformers' mine_hard_negatives, ingest time against document size, and retrieval quality
# on MedQuAD (about 10 min a seed).
bench: setup
	$(PY) benchmarks/llm_throughput.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/ingest_scaling.py
	$(PY) benchmarks/medquad.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
