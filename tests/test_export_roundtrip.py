"""Each export format loads back, unchanged, with the tool it is meant for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from run_fixtures import SEED, make_run

from distiller.export import FORMATS, export_run
from distiller.export.run import RunView

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("runs"))
    res = export_run(run, list(FORMATS), None, SEED)
    assert res.counts["qa"]["train"] and res.counts["triplets"]["train"]
    return res.out_dir


@pytest.fixture(scope="module")
def expected(out: Path) -> dict[str, dict]:
    """qa_id -> the pair as it is in the run (the truth every format must reproduce)."""
    view = RunView(out.parent)
    return {qa.qa_id: qa.model_dump() for qa in view.qa_pairs if qa.validation != "rejected"}


def _check_qa(rows: list[dict], expected: dict[str, dict]) -> None:
    assert rows
    for r in rows:
        qa = expected[r["id"]]
        assert (r["instruction"], r["output"], r["reasoning"]) == (
            qa["question"],
            qa["answer"],
            qa["reasoning"],
        )
        assert r["input"] == "" and r["difficulty"] == qa["difficulty"] and r["source"].startswith("docs/")


@pytest.mark.parametrize(
    ("fmt", "builder", "ext"), [("jsonl", "json", "jsonl"), ("json", "json", "json"), ("csv", "csv", "csv")]
)
def test_qa_files_load_with_datasets(
    out: Path, expected: dict, fmt: str, builder: str, ext: str, tmp_path: Path
) -> None:
    from datasets import load_dataset

    files = {s: str(out / fmt / f"{s}.{ext}") for s in ("train", "val", "test")}
    kwargs = {"keep_default_na": False} if builder == "csv" else {}
    ds = load_dataset(builder, data_files=files, cache_dir=str(tmp_path), **kwargs)
    assert set(ds) == set(files)
    _check_qa([r for s in ds for r in ds[s]], expected)
    assert sum(len(ds[s]) for s in ds) == len(expected)


def test_tsv_keeps_tabs_and_newlines_inside_fields(out: Path, expected: dict) -> None:
    rows = []
    for s in ("train", "val", "test"):
        frame = pd.read_csv(out / "tsv" / f"{s}.tsv", sep="\t", keep_default_na=False, dtype=str)
        assert " ".join(frame.columns[:6]) == "instruction input output reasoning difficulty source"
        rows += frame.to_dict("records")
    _check_qa(rows, expected)
    assert any("\t" in r["instruction"] for r in rows) and any("\n" in r["reasoning"] for r in rows)
    assert len(rows) == len(expected)


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_llama_factory_files_match_their_registry(
    out: Path, expected: dict, fmt: str, tmp_path: Path
) -> None:
    from datasets import load_dataset

    info = json.loads((out / fmt / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"demo_train", "demo_val", "demo_test"}
    questions = {qa["question"]: qa["answer"] for qa in expected.values()}
    for entry in info.values():
        assert entry["formatting"] == fmt
        ds = load_dataset("json", data_files=str(out / fmt / entry["file_name"]), cache_dir=str(tmp_path))[
            "train"
        ]
        for row in ds:
            if fmt == "alpaca":
                cols = entry["columns"]
                assert questions[row[cols["prompt"]]] == row[cols["response"]] and row[cols["query"]] == ""
            else:
                tags = entry["tags"]
                turns = row[entry["columns"]["messages"]]
                assert [t[tags["role_tag"]] for t in turns] == [tags["user_tag"], tags["assistant_tag"]]
                assert questions[turns[0][tags["content_tag"]]] == turns[1][tags["content_tag"]]


def test_hf_folders_load_from_disk(out: Path, expected: dict) -> None:
    from datasets import load_from_disk

    qa = load_from_disk(str(out / "hf" / "qa"))
    _check_qa([r for s in qa for r in qa[s]], expected)
    triplets = load_from_disk(str(out / "hf" / "triplets"))
    assert set(triplets) == {"train", "val", "test"}
    assert triplets["train"].column_names[:3] == ["anchor", "positive", "negative"]
    assert triplets["train"].features["positive_score"].dtype == "float64"
    queries = load_from_disk(str(out / "hf" / "queries"))
    assert all(len(r["positives"]) == len(r["positive_ids"]) >= 1 for r in queries["train"])


def test_triplet_and_splade_files(out: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    trip = load_dataset("json", data_files=str(out / "triplets" / "train.jsonl"), cache_dir=str(tmp_path))[
        "train"
    ]
    assert trip.column_names[:3] == ["anchor", "positive", "negative"]
    splade = [
        json.loads(x) for x in (out / "splade" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sum(len(r["negatives"]) for r in splade) == len(trip)
    for r in splade:
        assert {"query", "positive", "negatives"} <= set(r) and len(r["negatives"]) == len(
            r["negative_scores"]
        )
    raw = (out / "splade" / "train.raw.tsv").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(trip) and all(len(line.split("\t")) == 3 for line in raw)
