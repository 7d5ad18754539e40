"""Hugging Face `datasets` folders (`load_from_disk`).

Layout of `exports/hf/` (one DatasetDict per table; splits train / validation / test):

    exports/hf/                 load_from_disk("exports/hf"): the retrieval training table, anchor /
                                positive / negative (what SentenceTransformerTrainer reads)
    exports/hf/qa/              Q&A pairs (instruction, input, output, ...)
    exports/hf/queries/         queries with their positive passages
    exports/hf/triplets-full/   the triplets with ids, kind, iteration and scores
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from distiller.export.qa import QA_COLUMNS
from distiller.export.retrieval import TRIPLET_COLUMNS
from distiller.export.rows import SPLIT_NAMES
from distiller.records import Split

Rows = list[dict[str, Any]]


def _features(kind: str) -> Any:
    # Explicit features: a column that is None in every row (no scores in an offline run) would otherwise
    # get the `null` type and break concatenation with a later export that has values.
    from datasets import Features, Sequence, Value

    text = Value("string")
    if kind == "qa":
        return Features({c: text for c in QA_COLUMNS})
    if kind == "triplets":
        return Features(dict.fromkeys(TRIPLET_COLUMNS, text))
    if kind == "triplets-full":
        return Features(
            {
                "anchor": text,
                "positive": text,
                "negative": text,
                "query_id": text,
                "positive_id": text,
                "negative_id": text,
                "kind": text,
                "iteration": Value("int64"),
                "positive_score": Value("float64"),
                "negative_score": Value("float64"),
            }
        )
    return Features(
        {
            "id": text,
            "query": text,
            "positive_ids": Sequence(text),
            "positives": Sequence(text),
            "doc_id": text,
            "source_chunk": text,
            "query_type": text,
            "teacher": text,
        }
    )


def write_hf(kind: str, by_split: dict[Split, Rows], folder: Path) -> dict[str, int]:
    """Save the non-empty splits of one kind as a DatasetDict into `folder` (which may already hold other
    tables' subfolders: they are kept); return {split name: rows}."""
    from datasets import Dataset, DatasetDict
    from datasets.utils import logging as ds_logging

    features = _features(kind)
    names = list(features)
    parts = {
        SPLIT_NAMES[s]: Dataset.from_list([{c: r.get(c) for c in names} for r in rows], features=features)
        for s, rows in by_split.items()
        if rows
    }
    if not parts:
        return {}
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # save_to_disk draws a progress bar per split; an export is not interactive, so silence it (and only
    # for this call: the switch is process-wide).
    was_disabled = ds_logging.is_progress_bar_enabled() is False
    ds_logging.disable_progress_bar()
    try:
        DatasetDict(parts).save_to_disk(str(tmp))
    finally:
        if not was_disabled:
            ds_logging.enable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():  # move the DatasetDict's files in, beside any other table's folder
        dest = folder / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        item.replace(dest)
    tmp.rmdir()
    return {s: len(d) for s, d in parts.items()}
