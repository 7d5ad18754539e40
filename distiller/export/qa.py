"""Q&A-pair formats for instruction tuning: JSONL, JSON, CSV, TSV, Alpaca and ShareGPT (LLaMA-Factory).

Every writer takes the rows of one split and a path, writes the file atomically and returns the row count.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from distiller.export.io import atomic_path, write_json, write_jsonl

Rows = list[dict[str, Any]]

# The columns every tabular Q&A format carries, in order; the first six are the documented layout.
QA_COLUMNS = [
    "instruction",
    "input",
    "output",
    "reasoning",
    "difficulty",
    "source",
    "id",
    "doc_id",
    "source_chunk",
    "validation",
]


def _table(rows: Rows) -> list[dict[str, Any]]:
    return [{c: r.get(c, "") for c in QA_COLUMNS} for r in rows]


def write_qa_jsonl(rows: Rows, path: Path) -> int:
    return write_jsonl(_table(rows), path)


def write_qa_json(rows: Rows, path: Path) -> int:
    return write_json(_table(rows), path)


def _write_delimited(rows: Rows, path: Path, sep: str) -> int:
    # Fields are quoted where they hold the separator, a quote or a newline (RFC 4180), which pandas,
    # `datasets` and spreadsheet programs all read back; text is never altered.
    frame = pd.DataFrame(_table(rows), columns=QA_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_csv(
            tmp, sep=sep, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n", encoding="utf-8"
        )
    return len(frame)


def write_qa_csv(rows: Rows, path: Path) -> int:
    return _write_delimited(rows, path, ",")


def write_qa_tsv(rows: Rows, path: Path) -> int:
    return _write_delimited(rows, path, "\t")


def write_alpaca(rows: Rows, path: Path) -> int:
    """Alpaca: a JSON list of {instruction, input, output} (what LLaMA-Factory calls `alpaca`)."""
    return write_json(
        [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows], path
    )


def write_sharegpt(rows: Rows, path: Path) -> int:
    """ShareGPT: a JSON list of {conversations: [{from: human, value}, {from: gpt, value}]}."""
    convs = [
        {
            "conversations": [
                {"from": "human", "value": r["instruction"]},
                {"from": "gpt", "value": r["output"]},
            ]
        }
        for r in rows
    ]
    return write_json(convs, path)


def llama_factory_entry(formatting: str, file_name: str) -> dict[str, Any]:
    """One `dataset_info.json` entry: LLaMA-Factory finds a local dataset only through this registry."""
    if formatting == "alpaca":
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


QA_WRITERS: dict[str, tuple[str, Callable[[Rows, Path], int]]] = {
    "jsonl": ("jsonl", write_qa_jsonl),
    "json": ("json", write_qa_json),
    "csv": ("csv", write_qa_csv),
    "tsv": ("tsv", write_qa_tsv),
    "alpaca": ("json", write_alpaca),
    "sharegpt": ("json", write_sharegpt),
}
"""format -> (file extension, writer)"""


def dataset_info(fmt: str, run_name: str, files: dict[str, str]) -> dict[str, Any]:
    """The `dataset_info.json` for an alpaca/sharegpt folder: one entry per split file."""
    return {f"{run_name}_{split}": llama_factory_entry(fmt, name) for split, name in files.items()}


def dump_dataset_info(info: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
