"""Each export format loads back, unchanged, with the tool it is meant for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from helpers.run_fixtures import SEED, make_run

from distiller.export import FORMATS, export_run
from distiller.runview import RunView

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

    files = {s: str(out / fmt / f"{s}.{ext}") for s in ("train", "validation", "test")}
    kwargs = {"keep_default_na": False} if builder == "csv" else {}
    ds = load_dataset(builder, data_files=files, cache_dir=str(tmp_path), **kwargs)
    assert set(ds) == set(files)
    _check_qa([r for s in ds for r in ds[s]], expected)
    assert sum(len(ds[s]) for s in ds) == len(expected)


def test_tsv_keeps_tabs_and_newlines_inside_fields(out: Path, expected: dict) -> None:
    rows = []
    for s in ("train", "validation", "test"):
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
    assert set(info) == {"demo_train", "demo_validation", "demo_test"}
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
    triplets = load_from_disk(str(out / "hf"))  # the top level: the training table
    assert set(triplets) == {"train", "validation", "test"}
    assert triplets["train"].column_names == ["anchor", "positive", "negative"]
    full = load_from_disk(str(out / "hf" / "triplets-full"))
    assert set(full) == set(triplets) and full["train"].features["positive_score"].dtype == "float64"
    assert full["train"]["anchor"] == triplets["train"]["anchor"]
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


# LLaMA-Factory's documented dataset_info.json entry (data/README.md, and the keys
# `llamafactory.data.parser.get_dataset_list` reads): what a local file entry may hold.
_COLUMNS = ["prompt", "query", "response", "history", "messages", "system", "tools", "images"]
_COLUMNS += ["videos", "audios", "chosen", "rejected", "kto_tag"]
_TAGS = ["role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag"]
LLAMA_FACTORY_ENTRY = {
    "type": "object",
    "required": ["file_name"],
    "additionalProperties": False,
    "properties": {
        "file_name": {"type": "string"},
        "file_sha1": {"type": "string"},
        "formatting": {"enum": ["alpaca", "sharegpt"]},
        "ranking": {"type": "boolean"},
        "subset": {"type": "string"},
        "split": {"type": "string"},
        "folder": {"type": "string"},
        "num_samples": {"type": "integer"},
        "columns": {
            "type": "object",
            "additionalProperties": False,
            "properties": {c: {"type": "string"} for c in _COLUMNS},
        },
        "tags": {
            "type": "object",
            "additionalProperties": False,
            "properties": {t: {"type": "string"} for t in [*_TAGS, "system_tag"]},
        },
    },
}


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_dataset_info_matches_llama_factorys_documented_schema(out: Path, fmt: str) -> None:
    import jsonschema

    info = json.loads((out / fmt / "dataset_info.json").read_text(encoding="utf-8"))
    for name, entry in info.items():
        jsonschema.validate(entry, LLAMA_FACTORY_ENTRY)
        assert (out / fmt / entry["file_name"]).is_file(), name
        rows = json.loads((out / fmt / entry["file_name"]).read_text(encoding="utf-8"))
        cols = entry.get("columns", {})
        if fmt == "alpaca":  # defaults: prompt=instruction, query=input, response=output
            keys = [
                cols.get("prompt", "instruction"),
                cols.get("query", "input"),
                cols.get("response", "output"),
            ]
            assert all(set(keys) <= set(r) for r in rows)
        else:  # sharegpt: user turns at odd positions, assistant at even (LLaMA-Factory's rule)
            tags = entry.get("tags", {})
            user, bot = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
            for r in rows:
                roles = [t[tags.get("role_tag", "from")] for t in r[cols.get("messages", "conversations")]]
                assert roles[0::2] == [user] * len(roles[0::2]) and roles[1::2] == [bot] * len(roles[1::2])
