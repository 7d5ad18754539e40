"""export_run: what leaves a run (never rejected rows), how it is split (no leakage), the data card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.run_fixtures import NEAR_DUP, REJECTED_MARK, SEED, TRAIN_RATIO, VAL_RATIO, make_run

from distiller.config import SplitConfig
from distiller.errors import ConfigError, DistillError
from distiller.export import FORMATS, export_run, parse_formats, split_from_ratios
from distiller.export.rows import SPLIT_NAMES
from distiller.records import Chunk, Passage, read_parquet
from distiller.runview import RunView
from distiller.splits import word_set

SPLITS = tuple(SPLIT_NAMES.values())  # train, validation, test: the names exports use

RUN_SPLIT = SplitConfig(train_ratio=TRAIN_RATIO, val_ratio=VAL_RATIO)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _rows(out: Path, fmt: str) -> dict[str, list[dict]]:
    return {
        s: _jsonl(out / fmt / f"{s}.jsonl") if (out / fmt / f"{s}.jsonl").exists() else [] for s in SPLITS
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    export_run(run, ["jsonl", "triplets-full"], RUN_SPLIT, SEED)
    return run / "exports"


def test_jsonl_has_the_documented_fields_and_no_rejected_rows(run: Path, exported: Path) -> None:
    rows = _rows(exported, "jsonl")
    every = [r for s in SPLITS for r in rows[s]]
    assert every, "nothing exported"
    for r in every:
        assert {"instruction", "input", "output", "reasoning", "difficulty", "source"} <= set(r)
        assert r["validation"] in ("approved", "unvalidated")
        assert REJECTED_MARK not in r["output"]
    view = RunView(run)
    kept = [qa for qa in view.qa_pairs if qa.validation != "rejected"]
    assert len(every) == len(kept)
    # tabs and newlines survive JSON unchanged
    assert any("\t" in r["instruction"] for r in every) and any("\n" in r["reasoning"] for r in every)


def test_unvalidated_policy_drop(run: Path, tmp_path: Path) -> None:
    res = export_run(run, ["jsonl"], RUN_SPLIT, SEED, out_dir=tmp_path, unvalidated_policy="drop")
    every = [r for s in SPLITS for r in _rows(tmp_path, "jsonl")[s]]
    assert every and all(r["validation"] == "approved" for r in every)
    assert res.dropped["qa unvalidated"] > 0 and res.dropped["qa rejected"] > 0


def test_triplets_take_their_query_split_and_train_never_sees_held_out_text(
    run: Path, exported: Path
) -> None:
    view = RunView(run)
    passages = {p.passage_id: p for p in read_parquet(run / "passages.parquet", Passage)}
    rows = _rows(exported, "triplets-full")
    assert all(rows[s] for s in SPLITS)
    doc_split = {}
    for s in SPLITS:
        for r in rows[s]:
            assert set(r) >= {"anchor", "positive", "negative"}
            doc = passages[r["positive_id"]].doc_id
            assert doc_split.setdefault(doc, s) == s, f"document {doc} in two splits"
    held_out_docs = {d for d, s in doc_split.items() if s != "train"}
    for r in rows["train"]:
        assert passages[r["negative_id"]].doc_id not in held_out_docs
    assert len(view.triplets) > sum(len(v) for v in rows.values())  # the held-out negatives were dropped


@pytest.mark.parametrize(
    ("train", "val", "seed"),
    [(TRAIN_RATIO, VAL_RATIO, SEED), (0.5, 0.25, 99), (0.8, 0.1, 1), (0.34, 0.33, 2024)],
    ids=["run-split", "resplit-a", "resplit-b", "resplit-c"],
)
def test_no_source_chunk_and_no_near_duplicate_crosses_splits(
    run: Path, tmp_path: Path, train: float, val: float, seed: int
) -> None:
    """Every exported row's source chunk (and document) belongs to exactly one split, across Q&A pairs,
    queries and triplets; the near-duplicate pair the run had split apart is reunited."""
    from datasets import load_from_disk

    passages = {p.passage_id: p for p in read_parquet(run / "passages.parquet", Passage)}
    chunks = {c.chunk_id for c in read_parquet(run / "chunks.parquet", Chunk)}
    res = export_run(
        run,
        ["jsonl", "triplets-full", "hf"],
        SplitConfig(train_ratio=train, val_ratio=val),
        seed,
        out_dir=tmp_path,
    )
    assert res.resplit == (seed != SEED)
    queries = load_from_disk(str(tmp_path / "hf" / "queries"))
    split_of_chunk: dict[str, set[str]] = {}
    split_of_doc: dict[str, set[str]] = {}
    for s in SPLITS:
        sources = [(r["source_chunk"], r["doc_id"]) for r in _rows(tmp_path, "jsonl")[s]]
        sources += [(r["source_chunk"], r["doc_id"]) for r in queries.get(s, [])]
        sources += [
            (passages[r["positive_id"]].chunk_id, passages[r["positive_id"]].doc_id)
            for r in _rows(tmp_path, "triplets-full")[s]
        ]
        for chunk, doc in sources:
            split_of_chunk.setdefault(chunk, set()).add(s)
            split_of_doc.setdefault(doc, set()).add(s)
    assert split_of_chunk and set(split_of_chunk) <= chunks
    assert all(len(v) == 1 for v in split_of_chunk.values())
    assert all(len(v) == 1 for v in split_of_doc.values())
    dup_splits = {s for s in queries for r in queries[s] if word_set(r["query"]) == word_set(NEAR_DUP[0])}
    assert len(dup_splits) == 1


def test_resplit_is_deterministic_and_follows_the_ratios(run: Path, tmp_path: Path) -> None:
    split = SplitConfig(train_ratio=0.8, val_ratio=0.0)
    a = export_run(run, ["jsonl"], split, 7, out_dir=tmp_path / "a")
    b = export_run(run, ["jsonl"], split, 7, out_dir=tmp_path / "b")
    assert a.counts == b.counts and a.resplit
    assert (tmp_path / "a/jsonl/train.jsonl").read_bytes() == (tmp_path / "b/jsonl/train.jsonl").read_bytes()
    assert a.counts["qa"]["validation"] == 0 and a.counts["queries"]["validation"] == 0
    total = sum(a.counts["queries"].values())
    assert a.counts["queries"]["train"] > a.counts["queries"]["test"] > 0
    assert 0.5 < a.counts["queries"]["train"] / total < 0.95


def test_datacard_beside_every_format(run: Path, tmp_path: Path) -> None:
    res = export_run(
        run, list(FORMATS), RUN_SPLIT, SEED, out_dir=tmp_path, command="distill export demo --format all"
    )
    for fmt in FORMATS:
        card = (tmp_path / fmt / "README.md").read_text(encoding="utf-8")
        assert "distill export demo --format all" in card
        assert "openai:gpt-4o-mini" in card and "approval rate" in card and "95% CI" in card
        assert "$0.0036" in card and "## Licence" in card
    assert set(res.formats) == set(FORMATS)
    assert all(n > 0 for n in res.files.values())
    info = json.loads((tmp_path / "sharegpt" / "dataset_info.json").read_text())
    assert info["demo_train"]["formatting"] == "sharegpt" and info["demo_train"]["file_name"] == "train.json"


def test_offline_run_exports_triplets_and_says_why_qa_is_empty(tmp_path: Path) -> None:
    run = make_run(tmp_path, "offline", offline=True)
    res = export_run(run, "jsonl,triplets", None, SEED)
    assert not any(k.startswith("jsonl/") and k.endswith(".jsonl") for k in res.files)
    assert any(k.startswith("triplets/") for k in res.files)
    assert any("offline teacher" in n for n in res.notes)
    card = (run / "exports" / "jsonl" / "README.md").read_text(encoding="utf-8")
    assert "no ledger" in card and "offline" in card


def test_bad_formats_and_ratios_are_refused(run: Path) -> None:
    with pytest.raises(ConfigError, match="choose from"):
        parse_formats(["jsonl", "parquet"])
    assert parse_formats("jsonl, TSV,jsonl") == ["jsonl", "tsv"]
    with pytest.raises(ValueError):
        SplitConfig(train_ratio=0.8, val_ratio=0.3)
    with pytest.raises(ValueError):
        SplitConfig(train_ratio=-0.1, val_ratio=0.3)


def test_cli_facing_errors_are_one_line_distill_errors(run: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--train-ratio/--val-ratio: split ratios must be >= 0 and sum to <= 1"
    ):
        split_from_ratios(0.8, 0.3)
    with pytest.raises(ConfigError, match="val_ratio must be a number in"):
        split_from_ratios(0.8, -0.1)
    assert split_from_ratios(0.8, 0.1).test_ratio == pytest.approx(0.1)
    with pytest.raises(DistillError, match="not a run folder"):
        export_run(tmp_path, ["jsonl"], None)


def test_resplit_ratios_left_out_are_the_runs_own(run: Path, tmp_path: Path) -> None:
    # `distill export RUN --split --seed 7` re-splits at the run's ratios, not at a CLI default
    own = split_from_ratios(None, None, run)
    assert (own.train_ratio, own.val_ratio) == (TRAIN_RATIO, VAL_RATIO)
    assert (SplitConfig().train_ratio, SplitConfig().val_ratio) != (TRAIN_RATIO, VAL_RATIO)
    mixed = split_from_ratios(0.5, None, run)
    assert (mixed.train_ratio, mixed.val_ratio) == (0.5, VAL_RATIO)
    fallback = split_from_ratios(None, None)  # no run: the config's defaults
    assert (fallback.train_ratio, fallback.val_ratio) == (SplitConfig().train_ratio, SplitConfig().val_ratio)


def test_seed_defaults_to_the_runs_seed(run: Path, tmp_path: Path) -> None:
    res = export_run(run, ["jsonl"], RUN_SPLIT, None, out_dir=tmp_path)
    assert not res.resplit and f"--seed {SEED}" in res.command


def test_a_folder_never_mixes_two_splits(run: Path, tmp_path: Path) -> None:
    """Re-exporting one format with other ratios writes every format already in the folder again."""
    export_run(run, ["jsonl", "triplets-full"], RUN_SPLIT, SEED, out_dir=tmp_path)
    res = export_run(run, ["csv"], SplitConfig(train_ratio=0.5, val_ratio=0.25), 99, out_dir=tmp_path)
    assert set(res.formats) == {"csv", "jsonl", "triplets-full"}
    assert any("had another split" in n for n in res.notes)
    passages = {p.passage_id: p for p in read_parquet(run / "passages.parquet", Passage)}
    import pandas as pd

    for s in SPLITS:
        csv_docs = set()
        if (tmp_path / "csv" / f"{s}.csv").exists():
            csv_docs = set(pd.read_csv(tmp_path / "csv" / f"{s}.csv", keep_default_na=False)["doc_id"])
        jsonl_docs = {r["doc_id"] for r in _rows(tmp_path, "jsonl")[s]}
        assert csv_docs == jsonl_docs
        trip_docs = {passages[r["positive_id"]].doc_id for r in _rows(tmp_path, "triplets-full")[s]}
        others = {d for t in SPLITS if t != s for r in _rows(tmp_path, "jsonl")[t] for d in [r["doc_id"]]}
        assert not trip_docs & others
    marker = json.loads((tmp_path / "split.json").read_text())
    assert marker["seed"] == 99 and marker["train_ratio"] == 0.5
    # the same split again: nothing else is rewritten
    again = export_run(run, ["csv"], SplitConfig(train_ratio=0.5, val_ratio=0.25), 99, out_dir=tmp_path)
    assert again.formats == ["csv"]


def test_triplets_are_exactly_three_text_columns_and_ntuples_group_negatives(
    run: Path, tmp_path: Path
) -> None:
    res = export_run(run, ["triplets", "triplets-full", "ntuple"], RUN_SPLIT, SEED, out_dir=tmp_path)
    plain, full, tuples = (_rows(tmp_path, f) for f in ("triplets", "triplets-full", "ntuple"))
    for s in SPLITS:
        assert [list(r) for r in plain[s]] == [["anchor", "positive", "negative"]] * len(plain[s])
        assert [(r["anchor"], r["positive"], r["negative"]) for r in full[s]] == [
            (r["anchor"], r["positive"], r["negative"]) for r in plain[s]
        ]
    every = [r for s in SPLITS for r in tuples[s]]
    assert every
    n = len(every[0]) - 2
    assert all(list(r) == ["anchor", "positive", *[f"negative_{i}" for i in range(1, n + 1)]] for r in every)
    # every n-tuple's negatives are mined negatives of that (anchor, positive), without repeats
    negs: dict[tuple[str, str], set[str]] = {}
    for r in (r for s in SPLITS for r in full[s]):
        negs.setdefault((r["anchor"], r["positive"]), set()).add(r["negative"])
    for r in every:
        mine = [r[f"negative_{i}"] for i in range(1, n + 1)]
        assert len(set(mine)) == n and set(mine) <= negs[(r["anchor"], r["positive"])]
    short = sum(v for k, v in res.dropped.items() if k.startswith("ntuple"))
    assert len(every) + short == len(negs)
