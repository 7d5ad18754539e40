"""Real queries from the user (`--eval-file`): every candidate model is measured on them and the best
on them becomes models/best.

Two forms:

- BEIR: a folder with `queries.jsonl` ({"_id", "text"} a line) and qrels (`qrels/test.tsv`, else every
  `qrels/*.tsv` or `*.tsv` in the folder; columns query-id, corpus-id, score; a header line is optional;
  score > 0 is relevant), or the path of that `queries.jsonl` with its qrels beside it.
  A corpus-id names a document of the run, matched against, in order: the document's id (content hash),
  its source as the manifest shows it (`path`, or `path:id` for a .jsonl record), the record's id in a
  .jsonl (the value of `input.jsonl_id_field`, else the line number), the file name and the file name
  without its extension; or a passage (chunk) id. With documents (document mode) scoring is per
  document: a document ranks where its best chunk ranks, as in BEIR. In labeled mode the corpus ids are
  passage ids (`passages.parquet`).
- Question/answer pairs: a .jsonl ({"question", "answer"} a line), or a .json, .csv or .parquet with
  those columns (read as labeled mode reads its Q&A file). A passage
  is relevant when it contains the answer or the answer contains it (case and spacing ignored; a
  contained passage must be at least MIN_CONTAINED_CHARS long), scored per passage.

Anything that cannot be used (a missing column, a query with no matching id or passage in the whole
file) stops with one line naming the file (and line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from distiller.errors import EvalFileError, InputFileError
from distiller.records import Chunk, Document, Passage, Query

MIN_CONTAINED_CHARS = 40
"""A passage counts as part of a Q/A answer only when it is at least this long (no stray fragments)."""


@dataclass
class EvalSet:
    """The user's queries with their relevant units, and the corpus to search for them."""

    path: str
    form: str  # "beir" | "qa"
    queries: list[Query]
    corpus: list[Passage]
    unit_of: dict[str, str] | None = None  # passage id -> document id when scoring per document
    notes: list[str] = field(default_factory=list)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _rows(path: Path) -> list[tuple[int | None, dict[str, Any]]]:
    """The file's rows (.jsonl, .json, .csv, .parquet; the labeled-mode reader), errors as EvalFileError."""
    from distiller.labeled import read_qa_rows

    try:
        rows, _ = read_qa_rows(path)
    except InputFileError as e:
        raise EvalFileError(e.path, e.reason, e.line) from None
    if not rows:
        raise EvalFileError(str(path), "no queries in the file")
    return rows


def _field(path: Path, n: int | None, row: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name)
        if value is not None and str(value).strip():
            return str(value)
    have = ", ".join(sorted(row)[:8]) or "none"
    raise EvalFileError(str(path), f"missing column '{names[0]}' (columns here: {have})", n)


def _qrels_files(folder: Path) -> list[Path]:
    q = folder / "qrels"
    for candidates in (
        [q / "test.tsv"],
        sorted(q.glob("*.tsv")) if q.is_dir() else [],
        sorted(folder.glob("*.tsv")),
    ):
        found = [p for p in candidates if p.is_file()]
        if found:
            return found
    return []


def _read_qrels(path: Path) -> list[tuple[int, str, str]]:
    """(line, query id, corpus id) of every relevant pair (score > 0)."""
    out: list[tuple[int, str, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 3:
            raise EvalFileError(
                str(path),
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}",
                n,
            )
        try:
            score = float(cols[2])
        except ValueError:
            if n == 1:  # the BEIR header: query-id corpus-id score
                continue
            raise EvalFileError(str(path), f"score '{cols[2]}' is not a number", n) from None
        if score > 0:
            out.append((n, cols[0].strip(), cols[1].strip()))
    if not out:
        raise EvalFileError(str(path), "no relevant pairs (score > 0) in the qrels")
    return out


def _document_aliases(documents: list[Document]) -> dict[str, str]:
    """Every name a corpus id may use for a document -> its doc_id; a name two documents share is dropped."""
    names: dict[str, set[str]] = {}
    for d in documents:
        src = d.source_path
        file, _, key = src.rpartition(":") if d.format == "jsonl" else (src, "", "")
        file = file or src
        for alias in {d.doc_id, src, key, PurePath(file).name, PurePath(file).stem} - {""}:
            names.setdefault(alias, set()).add(d.doc_id)
    return {a: next(iter(ids)) for a, ids in names.items() if len(ids) == 1}


def _beir(path: Path, documents: list[Document], chunks: list[Chunk], passages: list[Passage]) -> EvalSet:
    folder, qfile = (path, path / "queries.jsonl") if path.is_dir() else (path.parent, path)
    if not qfile.is_file():
        raise EvalFileError(
            str(path), "no queries.jsonl in the folder (BEIR form: queries.jsonl + qrels/*.tsv)"
        )
    qrel_files = _qrels_files(folder)
    if not qrel_files:
        raise EvalFileError(
            str(path), "no qrels: expected qrels/test.tsv, qrels/*.tsv or *.tsv beside queries.jsonl"
        )
    texts = {
        _field(qfile, n, r, ("_id", "query_id", "id")): _field(qfile, n, r, ("text", "query"))
        for n, r in _rows(qfile)
    }
    if documents:  # document mode: score per document
        corpus = [
            Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
        ]
        ids = _document_aliases(documents) | {c.chunk_id: c.doc_id for c in chunks}
        unit_of: dict[str, str] | None = {c.chunk_id: c.doc_id for c in chunks}
        known = "document ids, sources (path or path:id), .jsonl record ids, file names or chunk ids"
    else:  # labeled mode: the passages are the corpus and its units
        corpus = passages
        ids = {p.passage_id: p.passage_id for p in passages}
        unit_of = None
        known = "passage ids of passages.parquet"
    rel: dict[str, list[str]] = {}
    n_pairs = unmatched = 0
    for qf in qrel_files:
        for _, qid, cid in _read_qrels(qf):
            n_pairs += 1
            if cid not in ids:
                unmatched += 1
                continue
            rel.setdefault(qid, [])
            if ids[cid] not in rel[qid]:
                rel[qid].append(ids[cid])
    where = ", ".join(str(q) for q in qrel_files)
    if not rel:
        sample = next(iter(_read_qrels(qrel_files[0])))[2]
        raise EvalFileError(
            where,
            f"none of the {n_pairs} corpus ids in the qrels match this run's corpus (e.g. '{sample}'); "
            f"corpus ids are matched against {known} (for a .jsonl corpus set input.jsonl_id_field)",
        )
    missing_text = sorted(set(rel) - set(texts))
    if len(missing_text) == len(rel):
        raise EvalFileError(
            str(qfile), f"none of the qrels' query ids are in the file (e.g. '{missing_text[0]}')"
        )
    queries = [
        Query(query_id=qid, text=texts[qid], positive_ids=pos, doc_id=qid, split="test", teacher="eval-file")
        for qid, pos in rel.items()
        if qid in texts
    ]
    notes = []
    if unmatched:
        notes.append(f"{unmatched} of {n_pairs} qrels name a corpus id this run does not have (left out)")
    if missing_text:
        notes.append(f"{len(missing_text)} query ids in the qrels are not in {qfile.name} (left out)")
    return EvalSet(str(path), "beir", queries, corpus, unit_of, notes)


def _qa_rows(path: Path) -> list[tuple[int | None, str, str]]:
    return [
        (n, _field(path, n, r, ("question", "query")), _field(path, n, r, ("answer", "answers")))
        for n, r in _rows(path)
    ]


def _qa(path: Path, chunks: list[Chunk], passages: list[Passage]) -> EvalSet:
    corpus = (
        [Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks]
        if chunks
        else passages
    )
    normed = [(p.passage_id, _norm(p.text)) for p in corpus]
    queries: list[Query] = []
    for i, (n, question, answer) in enumerate(_qa_rows(path), start=1):
        a = _norm(answer)
        pos = [pid for pid, t in normed if a and (a in t or (len(t) >= MIN_CONTAINED_CHARS and t in a))]
        if not pos:
            raise EvalFileError(
                str(path), f"the answer matches no passage of this run's corpus (answer: '{answer[:60]}')", n
            )
        queries.append(
            Query(query_id=f"eval-{i}", text=question, positive_ids=pos, doc_id=f"eval-{i}", split="test",
                  teacher="eval-file")
        )  # fmt: skip
    return EvalSet(str(path), "qa", queries, corpus)


def load_eval_file(
    path: str | Path, documents: list[Document], chunks: list[Chunk], passages: list[Passage]
) -> EvalSet:
    """Read `path` in whichever form it is in, against this run's corpus."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EvalFileError(str(p), "no such file or folder")
    if p.is_dir():
        return _beir(p, documents, chunks, passages)
    first = _rows(p)[0][1]
    if p.suffix.lower() != ".jsonl" or "question" in first or "answer" in first:
        return _qa(p, chunks, passages)
    return _beir(p, documents, chunks, passages)


__all__ = ["EvalSet", "load_eval_file"]
