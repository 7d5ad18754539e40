"""The run folder survives re-runs, races and a full disk (issue 10): cache restores touch only a stage's
own outputs, entries are whole or absent, and machine errors become one line with nothing left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import ROOT

from distiller.errors import EnvironmentProblem, StageError, environment_error
from distiller.store import RunStore, StageCache, StageResult


def _model(store: RunStore, rel: str, text: str) -> None:
    d = store.path(rel)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_text(text)


def _two_iterations(store: RunStore, calls: list[str]) -> None:
    """The stages of a 2-iteration run as far as the run folder sees them: models/iter1, models/iter2,
    then models/best next to them."""
    for k in (1, 2):
        store.run_stage(
            f"train_iter{k}",
            f"key{k}",
            [f"models/iter{k}"],
            lambda k=k: calls.append(f"train{k}") or _model(store, f"models/iter{k}", f"w{k}"),
        )

    def evaluate() -> None:
        calls.append("evaluate")
        store.path("metrics.txt").write_text("m")
        _model(store, "models/best", "w2")

    store.run_stage("evaluate", "keyE", ["metrics.txt", "models/best"], evaluate)


def test_rerun_of_two_iterations_is_all_cached_and_keeps_every_model(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs" / "it2", StageCache(tmp_path / "cache"))
    calls: list[str] = []
    _two_iterations(store, calls)
    assert calls == ["train1", "train2", "evaluate"]
    _two_iterations(store, calls)  # the re-run: restores, never trains
    assert calls == ["train1", "train2", "evaluate"]
    statuses = {k: v.status for k, v in store.stage_results().items()}
    assert statuses == {"train_iter1": "cached", "train_iter2": "cached", "evaluate": "cached"}
    for rel, text in (("models/iter1", "w1"), ("models/iter2", "w2"), ("models/best", "w2")):
        assert (store.path(rel) / "model.safetensors").read_text() == text, rel
    # a new run folder sharing the cache gets every model too
    other = RunStore(tmp_path / "runs" / "other", store.cache)
    _two_iterations(other, calls)
    assert calls == ["train1", "train2", "evaluate"]
    assert sorted(p.name for p in other.path("models").iterdir()) == ["best", "iter1", "iter2"]


def test_a_stage_that_removes_another_stages_output_fails_loudly(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", StageCache(tmp_path / "cache"))
    store.run_stage("a", "ka", ["models/iter1"], lambda: _model(store, "models/iter1", "w"))

    def clobber() -> None:
        import shutil

        shutil.rmtree(store.path("models"))
        _model(store, "models/iter2", "w")

    with pytest.raises(StageError, match=r"other stages' outputs were removed: models/iter1"):
        store.run_stage("b", "kb", ["models/iter2"], clobber)
    with pytest.raises(StageError, match=r"its outputs are missing: out.parquet"):
        store.run_stage("c", "kc", ["out.parquet"], lambda: None)
    assert store.cache.lookup("c", "kc") is None  # never cached


def test_restore_brings_back_an_output_the_user_deleted(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", StageCache(tmp_path / "cache"))
    _two_iterations(store, calls := [])
    import shutil

    shutil.rmtree(store.path("models/iter1"))  # by hand; the re-run must not call that a bug
    _two_iterations(store, calls)
    assert calls == ["train1", "train2", "evaluate"]
    assert (store.path("models/iter1") / "model.safetensors").read_text() == "w1"


def test_a_rerun_leaves_outputs_that_already_are_the_cached_ones_in_place(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", StageCache(tmp_path / "cache"))
    _two_iterations(store, calls := [])
    folders = {rel: store.path(rel).stat().st_ino for rel in ("models/iter1", "models/iter2", "models/best")}
    _two_iterations(store, calls)  # all cached: nothing deleted and linked again
    assert {rel: store.path(rel).stat().st_ino for rel in folders} == folders
    # a copy that is not the entry's any more is restored: a file written over, a file added
    weights = store.path("models/iter1/model.safetensors")
    weights.unlink()
    weights.write_text("edited")
    (store.path("models/best") / "extra.txt").write_text("x")
    _two_iterations(store, calls)
    assert calls == ["train1", "train2", "evaluate"]
    assert weights.read_text() == "w1" and not (store.path("models/best") / "extra.txt").exists()
    assert store.path("models/iter2").stat().st_ino == folders["models/iter2"]


def test_cache_entry_that_loses_a_race_is_discarded(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    a, b = RunStore(tmp_path / "runs" / "a", cache), RunStore(tmp_path / "runs" / "b", cache)
    a.path("out.txt").write_text("from a")
    b.path("out.txt").write_text("from b")
    res = StageResult(stage="s", status="completed", key="k", outputs={"out.txt": -1})
    cache.put(res, a.dir, ["out.txt"])
    cache.put(res, b.dir, ["out.txt"])  # same key, later: a's whole entry stays
    entry = cache.entry("s", "k")
    assert (entry / "files" / "out.txt").read_text() == "from a"
    # nothing half-written or temporary is left next to the entry
    assert [p.name for p in entry.parent.iterdir()] == ["k"]
    # a damaged entry (a file gone) is a miss and the next put replaces it whole
    (entry / "files" / "out.txt").unlink()
    assert cache.lookup("s", "k", ["out.txt"]) is None
    cache.put(res, b.dir, ["out.txt"])
    assert (entry / "files" / "out.txt").read_text() == "from b"
    assert [p.name for p in entry.parent.iterdir()] == ["k"]


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/chunks.parquet")


def test_full_disk_is_one_line_leaves_no_temp_file_and_a_rerun_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path / "run", StageCache(tmp_path / "cache"))
    store.run_stage("first", "k0", ["a.txt"], lambda: store.path("a.txt").write_text("a") and None)
    # The disk fills while the stage writes, and the manifest cannot be written either.
    monkeypatch.setattr(Path, "write_text", _enospc)
    with pytest.raises(EnvironmentProblem) as info:
        store.run_stage("second", "k1", ["b.txt"], lambda: store.path("b.txt").write_text("b") and None)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("second: disk full (/runs/x/chunks.parquet): free some space")
    assert not list(store.dir.glob(".*.tmp")) and not list(store.dir.glob("*.tmp"))
    monkeypatch.undo()
    # space is back: the same stage runs, the finished one is served from the cache
    assert store.run_stage("first", "k0", ["a.txt"], lambda: pytest.fail("redone")).status == "cached"
    res = store.run_stage("second", "k1", ["b.txt"], lambda: store.path("b.txt").write_text("b") and None)
    assert res.status == "completed" and store.path("b.txt").read_text() == "b"


def test_environment_error_names_the_problem_and_leaves_bugs_alone() -> None:
    e = OSError(errno.ENAMETOOLONG, "File name too long", "runs/" + "x" * 300)
    assert environment_error(e).startswith("file name too long (runs/xxx")
    wrapped = RuntimeError("write failed")
    wrapped.__cause__ = OSError(errno.EACCES, "Permission denied", "/ro/m")
    assert environment_error(wrapped) == (
        "permission denied (/ro/m): make the folder writable for this user, or choose another with --runs-dir"
    )
    arrow_like = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert environment_error(arrow_like).startswith("disk full:")
    assert environment_error(KeyError("x")) is None
    assert environment_error(FileNotFoundError(errno.ENOENT, "No such file", "a")) is None


@pytest.mark.slow
def test_real_two_iteration_run_rerun_is_all_cached_and_keeps_its_models(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """The issue's report: `distill run --iterations 2` twice failed on the re-run ("evaluate needs the
    trained models: missing models/iter1") and deleted models/iter1 and models/best."""
    from helpers.corpus import tiny_overrides

    from distiller.config import load_config
    from distiller.pipeline import run_pipeline
    from distiller.store import sha256_path

    cfg = load_config(
        overrides=tiny_overrides(
            tiny_corpus,
            tmp_path / "runs",
            run_name="it2",
            mining={"iterations": 2},
            # no checkpoints: the test is about the stage cache, and saving an optimizer is slow I/O
            training={"max_seq_length": 32, "batch_size": 32, "save_steps": 1000, "save_minutes": 0},
            export={"formats": ["jsonl"]},
        )
    )
    store = run_pipeline(cfg)
    models = ("models/iter1", "models/iter2", "models/best")
    first = {rel: sha256_path(store.path(rel)) for rel in models}
    again = run_pipeline(cfg)
    statuses = {k: v.status for k, v in again.stage_results().items()}
    assert set(statuses) >= {"train_iter1", "train_iter2", "mine_iter2", "evaluate"}
    assert set(statuses.values()) == {"cached"}, statuses
    assert {rel: sha256_path(again.path(rel)) for rel in models} == first


PUTTER = """
import shutil, sys
from pathlib import Path
from distiller.store import StageCache, StageResult
cache, run, tag = StageCache(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
model = run / "models" / "iter1"
for i in range(40):
    shutil.rmtree(model, ignore_errors=True)  # as run_stage does: never write into a cached file's inode
    model.mkdir(parents=True)
    for n in range(5):
        (model / f"f{n}").write_text(tag * 1000)
    key = f"k{i % 4}"
    cache.put(StageResult(stage="train_iter1", status="completed", key=key), run, ["models/iter1"])
    assert cache.lookup("train_iter1", key, ["models/iter1"]) is not None, key
    files = (cache.entry("train_iter1", key) / "files" / "models" / "iter1").iterdir()
    assert len({p.read_text() for p in files}) == 1, "an entry mixes two runs' files"
"""


def test_two_processes_putting_the_same_entries_never_mix_or_tear_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUTTER, str(tmp_path / "cache"), str(tmp_path / "runs" / tag), tag],
            env=env,
        )
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    stage_dir = tmp_path / "cache" / "stages" / "train_iter1"
    assert sorted(p.name for p in stage_dir.iterdir()) == ["k0", "k1", "k2", "k3"]  # no temp or old folders
    for entry in stage_dir.iterdir():
        files = list((entry / "files" / "models" / "iter1").iterdir())
        assert len(files) == 5 and len({f.read_text() for f in files}) == 1
