"""Labeled mode: the user's own question/answer pairs become the retrieval task.

Answers are the corpus, questions the queries. An answer longer than `chunking.chunk_size` tokens (the
student's tokenizer) is split with semchunk; every chunk of a query's answer counts as relevant.
Identical answer texts (after whitespace normalisation) become one passage, so a question's
ground truth never shows up as a "negative" copy of itself.

Identical questions (up to case and spacing) become one query whose relevant passages are all their
answers.

Splits are made by group, never by row: by `input.group_column` (a topic or document) when given,
otherwise by the answer text. Groups that share an answer text or a question are merged first
(union-find): the shared passage would otherwise be a training positive and a test positive at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import InputFileError
from distiller.ingest.chunking import chunker_for
from distiller.records import Passage, QAPair, Query
from distiller.splits import UnionFind, assign_groups

logger = logging.getLogger(__name__)

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _question_key(question: str) -> str:
    """Questions that differ only in case, spacing or the space before '?' are the same question."""
    return re.sub(r"\s+(?=[?.!])", "", _norm(question)).casefold()


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# --- reading -------------------------------------------------------------------------------------------


def _json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise InputFileError(str(path), f"not valid JSON: {e.msg} (column {e.colno})", line=e.lineno) from e
    if isinstance(data, dict):
        # {"data": [...]} or a column-oriented {"question": [...], "answer": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]
        elif lists and all(isinstance(v, list) for v in data.values()):
            n = len(lists[0])
            if any(len(v) != n for v in data.values()):
                raise InputFileError(str(path), "column lists have different lengths")
            data = [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputFileError(str(path), "expected a list of objects with question and answer fields")
    return data


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputFileError(str(path), f"not valid JSON: {e.msg} (column {e.colno})", line=n) from e
            if not isinstance(row, dict):
                raise InputFileError(str(path), f"expected a JSON object, got {type(row).__name__}", line=n)
            yield n, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def read_qa_rows(path: Path) -> tuple[list[tuple[int | None, dict[str, Any]]], list[str]]:
    """Rows of the file as (line number or None, mapping), and the columns seen."""
    if not path.is_file():
        raise InputFileError(str(path), "labeled Q&A file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows: list[tuple[int | None, dict[str, Any]]] = list(_jsonl_rows(path))
        elif suffix == ".json":
            rows = [(None, r) for r in _json_rows(path)]
        elif suffix == ".csv":
            rows = list(_csv_rows(path))
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as e:  # pyarrow raises several types for a broken file
                raise InputFileError(str(path), f"not a readable Parquet file: {e}") from e
            return [(None, r) for r in table.to_pylist()], list(table.column_names)
        else:
            raise InputFileError(
                str(path), f"unsupported format {suffix!r}: use .json, .jsonl, .csv or .parquet"
            )
    except UnicodeDecodeError as e:
        raise InputFileError(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise InputFileError(str(path), f"malformed CSV: {e}") from e
    columns = list(dict.fromkeys(k for _, r in rows for k in r))
    return rows, columns


def _missing_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


# --- grouping ------------------------------------------------------------------------------------------


def _group_first(name: Hashable) -> tuple[bool, str]:
    """The user's group name beats an answer hash, then the smaller name: the representative does not
    depend on row order."""
    return (not str(name).startswith("g:"), str(name))


def load_labeled(cfg: DistillConfig) -> tuple[list[Passage], list[Query]]:
    """Read `cfg.input.qa_file` into passages (answers, chunked) and queries (questions, split by group)."""
    inp = cfg.input
    if not inp.qa_file:
        raise InputFileError("(config)", "labeled mode needs input.qa_file")
    path = Path(inp.qa_file)
    rows, columns = read_qa_rows(path)
    needed = [inp.question_column, inp.answer_column] + ([inp.group_column] if inp.group_column else [])
    for col in needed:
        if col not in columns:
            raise InputFileError(
                str(path), f"missing column {col!r} (columns found: {', '.join(columns) or 'none'})"
            )

    pairs: list[tuple[str, str, str]] = []  # (question, answer, raw group)
    skipped: list[str] = []
    for n, (line, row) in enumerate(rows, start=1):
        # NaN (pandas' missing value, `NaN` in JSON) is a missing value in every format, as null is
        q, a = (_missing_to_none(row.get(c)) for c in (inp.question_column, inp.answer_column))
        where = f"line {line}" if line else f"row {n}"
        if not isinstance(q, str | None) or not isinstance(a, str | None):
            raise InputFileError(str(path), f"{where}: question and answer must be text", line=line)
        q, a = _norm(q or ""), (a or "").strip()
        if not q or not a:
            skipped.append(where)
            continue
        g = row.get(inp.group_column) if inp.group_column else None
        pairs.append((q, a, "" if g is None else str(g)))
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        logger.warning(
            "%s: %d rows without a question or an answer were skipped (%s)", path, len(skipped), shown
        )
    if not pairs:
        raise InputFileError(str(path), "no question/answer pairs found")

    # One passage (or chunk list) per distinct answer text.
    split_text = chunker_for(cfg).split_text
    answer_chunks: dict[str, list[str]] = {}
    for _, a, _ in pairs:
        key = _norm(a)
        if key not in answer_chunks:
            answer_chunks[key] = split_text(a)

    # Groups: the user's column, else the answer; merged where they share an answer or a question.
    uf = UnionFind(key=_group_first)
    for q, a, g in pairs:
        ak = "a:" + _hash(_norm(a))
        uf.union(ak, "g:" + g if inp.group_column else ak)
        uf.union(ak, "q:" + _question_key(q))

    def group_of(answer_key: str) -> str:
        rep = str(uf.find("a:" + _hash(answer_key)))
        return rep[2:] if rep.startswith("g:") else "answer-" + rep[2:]

    passages: list[Passage] = []
    chunk_ids: dict[str, list[str]] = {}
    for key, chunks in answer_chunks.items():
        aid = _hash(key)
        group = group_of(key)
        ids = []
        for i, text in enumerate(chunks):
            pid = f"a{aid}-{i}"
            ids.append(pid)
            passages.append(Passage(passage_id=pid, doc_id=group, chunk_id=pid, text=text))
        chunk_ids[key] = ids

    # One query per distinct question: where the same question has several answers (MedQuAD: one per
    # source collection), all of them answer it; as separate queries each answer would be mined as a
    # (false) negative of the other, and evaluation would count a right answer as wrong.
    by_question: dict[str, Query] = {}
    for q, a, _ in pairs:
        qk = _question_key(q)
        query = by_question.get(qk)
        if query is None:
            by_question[qk] = Query(
                query_id="q" + _hash(qk),
                text=q,
                positive_ids=list(chunk_ids[_norm(a)]),
                doc_id=group_of(_norm(a)),
                split="train",
                teacher="labeled",
            )
        else:
            query.positive_ids += [p for p in chunk_ids[_norm(a)] if p not in query.positive_ids]
    queries = list(by_question.values())
    weights: dict[str, int] = {}
    for query in queries:
        weights[query.doc_id] = weights.get(query.doc_id, 0) + 1

    splits = assign_groups(weights, cfg.split.train_ratio, cfg.split.val_ratio, cfg.seed, weights=weights)
    for query in queries:
        query.split = splits[query.doc_id]
    logger.info(
        "%s: %d questions, %d passages from %d answers, %d groups",
        path,
        len(queries),
        len(passages),
        len(answer_chunks),
        len(weights),
    )
    return passages, queries


def qa_pairs_of(passages: list[Passage], queries: list[Query]) -> list[QAPair]:
    """The user's pairs as Q&A rows: each question with its (chunked) answer put back together, approved
    (the user's own ground truth)."""
    text = {p.passage_id: p.text for p in passages}
    return [
        QAPair(
            qa_id=q.query_id,
            question=q.text,
            answer="\n".join(text[pid] for pid in q.positive_ids),
            source_chunk=q.positive_ids[0],
            doc_id=q.doc_id,
            split=q.split,
            teacher="labeled",
            validation="approved",
        )
        for q in queries
    ]


__all__ = ["load_labeled", "qa_pairs_of", "read_qa_rows"]
