"""Stage functions without Prefect: inputs to artifacts, cache keys, and stage errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.corpus import tiny_overrides

from distiller.config import load_config
from distiller.errors import StageError
from distiller.stages import generate_stage, ingest_stage, labeled_stage, mine_stage, open_store


def test_ingest_and_generate_are_cached_by_content(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = load_config(overrides=tiny_overrides(tiny_corpus, tmp_path / "runs"))
    store = open_store(cfg)
    assert ingest_stage(store, cfg).status == "completed"
    assert generate_stage(store, cfg).status == "completed"
    # the same corpus copied elsewhere: same contents, so the same keys
    moved = tmp_path / "moved"
    tiny_corpus.rename(moved)
    cfg2 = load_config(overrides=tiny_overrides(moved, tmp_path / "runs"))
    store = open_store(cfg2)
    assert ingest_stage(store, cfg2).status == "cached"
    assert generate_stage(store, cfg2).status == "cached"
    # one changed byte in one file: ingest and everything after it run again
    f = next(moved.glob("*.md"))
    f.write_text(f.read_text() + "\nOne more sentence for the corpus, long enough to count.\n")
    assert ingest_stage(store, cfg2).status == "completed"
    assert generate_stage(store, cfg2).status == "completed"
    m = store.manifest()
    assert m["config"]["input"]["paths"] == [str(moved)]
    assert m["stages"]["generate"]["details"]["notes"][0].startswith("No LLM configured")


def test_stage_out_of_order_says_what_it_needs(tmp_path: Path) -> None:
    cfg = load_config(overrides={"runs_dir": str(tmp_path), "run_name": "x"})
    store = open_store(cfg)
    with pytest.raises(StageError, match=r"generate needs chunks\.parquet"):
        generate_stage(store, cfg)
    with pytest.raises(StageError, match="run generate first"):
        mine_stage(store, cfg, 1)


def test_labeled_stage_groups_by_topic(tmp_path: Path) -> None:
    rows = []
    for t in range(6):
        for i in range(4):
            rows.append(
                {
                    "q": f"What is the {i}th fact about topic {t}?",
                    "a": f"Topic {t} fact {i}: " + "words " * 20,
                    "topic": f"t{t}",
                }
            )
    f = tmp_path / "qa.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    cfg = load_config(
        overrides={
            "runs_dir": str(tmp_path / "runs"),
            "input": {
                "qa_file": str(f),
                "question_column": "q",
                "answer_column": "a",
                "group_column": "topic",
            },
        }
    )
    store = open_store(cfg)
    res = labeled_stage(store, cfg)
    assert res.status == "completed" and res.outputs["queries.parquet"] == 24
    q = pd.read_parquet(store.path("queries.parquet"))
    assert q.groupby("doc_id").split.nunique().max() == 1  # a topic never spans two splits
    assert set(q.split) == {"train", "val", "test"}
    qa = pd.read_parquet(store.path("qa_pairs.parquet"))
    assert (qa.validation == "approved").all() and (qa.teacher == "labeled").all()
    assert labeled_stage(store, cfg).status == "cached"
