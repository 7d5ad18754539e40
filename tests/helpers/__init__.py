"""Test helpers, importable as `helpers` (pytest puts tests/ on the path: pyproject's `pythonpath`).

- `corpus`: the repository's paths, the example corpus, a small config for 2-core CI machines
- `llm_fixtures`: the loopback LLM server fixtures (registered for every test by conftest.py)
- `run_fixtures`: a synthetic finished run folder
- `generation_responder`: a scripted teacher that answers every prompt as a model would
"""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
"""tests/: what a subprocess puts on sys.path to import `helpers`."""
ROOT = TESTS_DIR.parent
"""The repository's root."""
