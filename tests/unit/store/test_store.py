from __future__ import annotations

from pathlib import Path

import pytest

from distiller.records import Chunk, read_parquet, write_parquet
from distiller.store import RunStore, StageCache, stage_key


def _chunk(i: int) -> Chunk:
    return Chunk(
        chunk_id=f"c{i}",
        doc_id="d",
        source_path="x.md",
        chunk_index=i,
        char_start=0,
        char_end=3,
        text=f"t{i}",
        n_tokens=1,
    )


def test_stage_runs_once_then_is_served_from_cache(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    calls = []

    def work(store: RunStore):
        def run():
            calls.append(1)
            write_parquet(store.path("chunks.parquet"), [_chunk(1), _chunk(2)], Chunk)
            return {"message": "two chunks"}

        return run

    a = RunStore(tmp_path / "runs" / "a", cache)
    r1 = a.run_stage("ingest", "k1", ["chunks.parquet"], work(a))
    assert r1.status == "completed" and r1.outputs == {"chunks.parquet": 2}
    r2 = a.run_stage("ingest", "k1", ["chunks.parquet"], work(a))
    assert r2.status == "cached" and len(calls) == 1
    # another run folder with the same key gets the artifact without running the stage
    b = RunStore(tmp_path / "runs" / "b", cache)
    r3 = b.run_stage("ingest", "k1", ["chunks.parquet"], work(b))
    assert r3.status == "cached" and len(calls) == 1
    assert [c.chunk_id for c in read_parquet(b.path("chunks.parquet"), Chunk)] == ["c1", "c2"]
    assert b.manifest()["stages"]["ingest"]["status"] == "cached"


def test_rerun_never_overwrites_a_cached_file_in_place(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    s = RunStore(tmp_path / "run", cache)
    s.run_stage(
        "x",
        "k1",
        ["chunks.parquet"],
        lambda: write_parquet(s.path("chunks.parquet"), [_chunk(1)], Chunk) and None,
    )
    # a new key rewrites the run folder's file; the cached copy for k1 must stay intact
    s.run_stage(
        "x",
        "k2",
        ["chunks.parquet"],
        lambda: write_parquet(s.path("chunks.parquet"), [_chunk(7), _chunk(8)], Chunk) and None,
    )
    cached = cache.entry("x", "k1") / "files" / "chunks.parquet"
    assert [c.chunk_id for c in read_parquet(cached, Chunk)] == ["c1"]


def test_failed_stage_is_recorded_and_not_cached(tmp_path: Path) -> None:
    s = RunStore(tmp_path / "run", StageCache(tmp_path / "cache"))

    def boom():
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        s.run_stage("x", "k", ["out.parquet"], boom)
    entry = s.manifest()["stages"]["x"]
    assert entry["status"] == "failed" and "disk on fire" in entry["message"]
    assert s.cache.lookup("x", "k") is None


def test_stage_key_uses_contents_not_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    b.parent.mkdir()
    a.write_text("same")
    b.write_text("same")
    assert stage_key("s", "1", "h", [a]) == stage_key("s", "1", "h", [b])
    b.write_text("different")
    assert stage_key("s", "1", "h", [a]) != stage_key("s", "1", "h", [b])
