"""Ingest in shards of files: the same documents and chunks as one piece, whatever the grouping; added
and edited files re-read only their own shards; a stopped ingest resumes at the first unread shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from distiller.config import DistillConfig, load_config
from distiller.ingest.shards import IngestDone, IngestShard
from distiller.stages import ingest_stage, open_store

GOOD = (
    "Aicardi syndrome is a disorder that occurs almost exclusively in females. It is characterized by three "
    "main features that occur together in most affected individuals.\n\n"
    "Most affected individuals also have seizures beginning in infancy. The severity varies widely.\n"
)


def _corpus(tiny_corpus: Path) -> Path:
    """The six example documents plus what ingest must report: a duplicate in another file (first one
    wins), a .jsonl with a bad line, an empty file."""
    shutil.copy(tiny_corpus / "aicardi-syndrome.md", tiny_corpus / "zz-copy-of-aicardi.md")
    lines = [
        json.dumps({"id": "a", "text": GOOD}),
        "{not json",
        json.dumps({"id": "b", "text": GOOD + "More."}),
    ]
    (tiny_corpus / "records.jsonl").write_text("\n".join(lines) + "\n")
    (tiny_corpus / "empty.txt").write_bytes(b"")
    return tiny_corpus


def _cfg(corpus: Path, root: Path, per_shard: int) -> DistillConfig:
    return load_config(
        overrides={
            "input": {"paths": [str(corpus)], "files_per_shard": per_shard},
            "chunking": {"chunk_size": 48},
            "runs_dir": str(root / "runs"),
            "cache_dir": str(root / "cache"),
            "run_name": "r",
        }
    )


def _outputs(cfg: DistillConfig) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    store = open_store(cfg)
    res = ingest_stage(store, cfg)
    return (
        pd.read_parquet(store.path("sources.parquet")),
        pd.read_parquet(store.path("chunks.parquet")),
        res.details["skipped_inputs"],
    )


@pytest.mark.parametrize("per_shard", [1, 3])
def test_sharded_ingest_writes_what_one_piece_writes(
    tiny_corpus: Path, tmp_path: Path, per_shard: int
) -> None:
    corpus = _corpus(tiny_corpus)
    one = _outputs(_cfg(corpus, tmp_path / "one", 0))
    cfg = _cfg(corpus, tmp_path / "sharded", per_shard)
    many = _outputs(cfg)
    pd.testing.assert_frame_equal(one[0], many[0])
    pd.testing.assert_frame_equal(one[1], many[1])
    assert one[2] == many[2]
    reasons = " ".join(s["reason"] for s in many[2])
    assert "duplicate of" in reasons and "line" in json.dumps(many[2])
    details = open_store(cfg).stage_results()["ingest"].details
    assert details["shards"] == -(-9 // per_shard) == details["shards_read"]  # 9 files (empty.txt: skipped)


def test_added_and_edited_files_read_only_their_shards(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = _corpus(tiny_corpus)
    cfg = _cfg(corpus, tmp_path / "inc", 2)
    _outputs(cfg)
    first = open_store(cfg).stage_results()["ingest"].details
    assert (first["shards"], first["shards_read"]) == (5, 5)  # 9 files, the last shard holds one
    # Two files whose names sort first: they top up the last shard, then open a new one; and an edit to
    # the first file: its shard is read again. The shards between keep their parts.
    (corpus / "aaa-new.md").write_text(GOOD.replace("Aicardi", "Bicardi"))
    (corpus / "aab-new.md").write_text(GOOD.replace("Aicardi", "Cicardi"))
    (corpus / "aicardi-syndrome.md").write_text(GOOD + "\n\nAn edit.\n")
    inc = _outputs(cfg)
    details = open_store(cfg).stage_results()["ingest"].details
    assert (details["shards"], details["shards_read"], details["shards_reused"]) == (6, 3, 3)
    assert details["shard_parts_pruned"] == 2  # the old parts of the edited and the topped-up shard
    assert len(list(open_store(cfg).path("shards/ingest").iterdir())) == 6
    cold = _outputs(_cfg(corpus, tmp_path / "cold", 0))
    pd.testing.assert_frame_equal(inc[0], cold[0])
    pd.testing.assert_frame_equal(inc[1], cold[1])


def test_a_stopped_ingest_resumes_at_the_first_unread_shard(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_corpus, tmp_path / "kill", 2)
    store = open_store(cfg)
    read: list[int] = []

    def dies_after_one(fn, todo: list[IngestShard]) -> list[IngestDone]:
        fn(todo[0])
        read.append(todo[0].index)
        # what a kill while writing the next part leaves: a torn temporary folder
        Path(todo[1].out + ".part-99").mkdir(parents=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_stage(store, cfg, mapper=dies_after_one)
    assert read == [0]
    again = ingest_stage(store, cfg)
    assert (again.details["shards"], again.details["shards_read"], again.details["shards_reused"]) == (
        3,
        2,
        1,
    )
    assert not list(store.path("shards/ingest").glob("*.part-*"))
    cold = _outputs(_cfg(tiny_corpus, tmp_path / "cold", 0))
    pd.testing.assert_frame_equal(pd.read_parquet(store.path("chunks.parquet")), cold[1])


def test_file_groups_cost_their_bytes_and_go_to_workers_biggest_first(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    from distiller.retrieval.shards import largest_first
    from distiller.stages.ingest import shard_plan

    (tiny_corpus / "zz-big.txt").write_text(GOOD * 50)
    specs = shard_plan(open_store(cfg := _cfg(tiny_corpus, tmp_path, 2)), cfg)
    assert [s.cost for s in specs] == [sum(Path(p).stat().st_size for p in s.paths) for s in specs]
    first = largest_first(specs)[0]
    assert any(p.endswith("zz-big.txt") for p in first.paths) and first.index == len(specs) - 1
