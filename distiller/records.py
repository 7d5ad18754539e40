"""Records that cross a stage boundary. Each is a pydantic model; the Parquet schema is derived from it,
so the model is the one source of truth for every artifact's columns."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "val", "test"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SkippedInput(Record):
    """An input (a file, or one line of a .jsonl) that did not go through, and why."""

    path: str
    reason: str
    line: int | None = None


class Document(Record):
    doc_id: str = Field(description="Content hash of the document's text: stable across paths and runs.")
    source_path: str
    format: str
    n_chars: int
    title: str | None = None


class Chunk(Record):
    chunk_id: str
    doc_id: str
    source_path: str
    chunk_index: int
    char_start: int = Field(description="Span in the document's extracted text, [start, end).")
    char_end: int
    text: str
    n_tokens: int


class Passage(Record):
    """An entry of the retrieval corpus that mining and evaluation search over."""

    passage_id: str
    doc_id: str
    chunk_id: str | None = None
    text: str


class Query(Record):
    query_id: str
    text: str
    positive_ids: list[str] = Field(description="Passage ids that answer the query (the qrels).")
    doc_id: str = Field(description="Source document (or topic group): the unit splits are made of.")
    chunk_id: str | None = None
    concept_id: str | None = None
    split: Split = "train"
    teacher: str = Field(description="'offline-ict', a model name, or 'labeled'.")
    language: str = "en"
    complexity: str | None = None
    query_type: str | None = None
    answer_type: str | None = None
    key_concepts: list[str] = Field(default_factory=list)


class QAPair(Record):
    qa_id: str
    question: str
    answer: str
    reasoning: str | None = None
    difficulty: str | None = None
    source_chunk: str | None = None
    doc_id: str
    split: Split = "train"
    teacher: str
    validation: Literal["approved", "rejected", "unvalidated"] = "unvalidated"


class Triplet(Record):
    query_id: str
    query: str
    positive_id: str
    positive: str
    negative_id: str
    negative: str
    kind: Literal["hard", "easy", "generated"]
    iteration: int
    positive_rank: int | None = None
    negative_rank: int | None = None
    positive_score: float | None = None
    negative_score: float | None = None


QuerySet = Literal["inverse-cloze", "llm", "labeled", "eval-file", "unknown"]
"""What a metric was measured on. Every place that shows a metric shows QUERY_SET_LABELS[query_set]."""

QUERY_SET_LABELS: dict[str, str] = {
    "inverse-cloze": "inverse-cloze pseudo-queries (not real questions)",
    "llm": "LLM-written queries",
    "labeled": "your labeled questions",
    "eval-file": "your eval file",
    "unknown": "queries not recorded (a run from before query sets were recorded)",
}

REAL_QUERY_SETS = frozenset({"labeled", "eval-file"})
"""Query sets written by people: a gain measured on them is a gain on real questions."""

OFFLINE_WARNING = (
    "These metrics are measured on inverse-cloze pseudo-queries (sentences cut from your own passages), "
    "not real questions: a gain on them does not show a gain on real queries, and can hide a loss. "
    "Give a few real queries with --eval-file (even 50) to measure and select on them."
)


def query_set_label(query_set: str) -> str:
    return QUERY_SET_LABELS.get(query_set, query_set)


def query_set_of(queries: list[Query]) -> QuerySet:
    """The query set of the run's own held-out queries, from the teacher that wrote them."""
    teachers = {q.teacher for q in queries}
    if teachers and teachers <= {"offline-ict"}:
        return "inverse-cloze"
    if teachers and teachers <= {"labeled"}:
        return "labeled"
    return "llm" if teachers else "unknown"


class MetricRow(Record):
    model: str = Field(description="'base', 'iter<k>', 'bm25'.")
    iteration: int = Field(description="0 for the base model and BM25.")
    metric: str
    value: float
    n_queries: int
    query_set: QuerySet = Field(
        default="unknown", description="What it was measured on; QUERY_SET_LABELS says it in words."
    )


def selection_set(rows: list[MetricRow]) -> str | None:
    """The query set that picks models/best: the user's eval file when there is one, else the run's own."""
    sets = list(dict.fromkeys(r.query_set for r in rows))
    return "eval-file" if "eval-file" in sets else (sets[0] if sets else None)


def rows_by_set(rows: list[MetricRow]) -> dict[str, list[MetricRow]]:
    """Metric rows per query set, the selection set first (each set is its own table)."""
    out: dict[str, list[MetricRow]] = {}
    first = selection_set(rows)
    for r in sorted(rows, key=lambda r: r.query_set != first):
        out.setdefault(r.query_set, []).append(r)
    return out


# --- Parquet <-> records -----------------------------------------------------------------------------

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for a field annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner, _ = _arrow_type(args[0]) if len(args) == 1 else (pa.string(), True)
        return inner, True
    if origin is Literal:
        return _SCALARS[type(get_args(annotation)[0])], False
    if origin in (list, typing.List):  # noqa: UP006
        inner, _ = _arrow_type(get_args(annotation)[0])
        return pa.list_(inner), False
    if origin is dict or annotation is dict:
        return pa.string(), False  # stored as JSON text
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Parquet type for {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        typ, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields, metadata={b"record": model.__name__.encode()})


R = TypeVar("R", bound=BaseModel)


def to_table(records: list[R] | list[dict[str, Any]], model: type[R]) -> pa.Table:
    rows = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in records]
    schema = arrow_schema(model)
    return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(path: Path, records: list[R] | list[dict[str, Any]], model: type[R]) -> int:
    """Write records atomically (temporary name, then rename): a killed run never leaves a half file."""
    table = to_table(records, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a half file behind either
        raise
    return int(table.num_rows)


def read_parquet(path: Path, model: type[R]) -> list[R]:
    table = pq.read_table(path)
    return [model.model_validate(row) for row in table.to_pylist()]


def parquet_rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


# --- generation and validation records (LLM teacher) ------------------------------------------------


class Concept(Record):
    """A row of the bootstrap knowledge base (`concepts.parquet`): a concept, or a relationship of two."""

    concept_id: str
    kind: Literal["concept", "relationship"]
    term: str = Field(description="The concept's term; for a relationship 'source --type--> target'.")
    definition: str = Field(description="A concept's definition; a relationship's description.")
    examples: list[str] = Field(default_factory=list)
    related_terms: list[str] = Field(default_factory=list)
    category: str | None = None
    relation_type: str | None = None
    source_id: str | None = Field(default=None, description="Relationship: the concept it starts from.")
    target_id: str | None = Field(default=None, description="Relationship: the concept it points to.")
    domain: str
    language: str
    teacher: str


class GeneratedDocument(Record):
    """A document written by the teacher for one query (`documents.parquet`): a positive that answers it or
    a negative that looks relevant but does not, with the strategy that made it and why it fails."""

    document_id: str
    query_id: str
    role: Literal["positive", "negative"]
    text: str
    strategy: str | None = Field(
        default=None, description="Negatives: topical_shift, entity_substitution, ... or 'related'."
    )
    explanation: str | None = Field(default=None, description="Negatives: why it does not answer the query.")
    length: str | None = Field(default=None, description="short / medium / long (the target asked for).")
    doc_id: str = Field(description="The query's split group (concept or source document).")
    concept_id: str | None = None
    chunk_id: str | None = None
    language: str = "en"
    teacher: str


class Judgment(Record):
    """The judge's check of one sampled row (`judgments.parquet`). A call that failed or that the budget
    did not allow is a row too (verdict failed / not_sent): the row stays unvalidated, visibly."""

    judgment_id: str
    item_id: str = Field(description="The judged row: a qa_id or a query_id.")
    item_kind: Literal["qa", "query"]
    verdict: Literal["approved", "rejected", "failed", "not_sent"]
    grounded: bool | None = None
    no_hallucination: bool | None = None
    complete: bool | None = None
    factually_correct: bool | None = None
    problems: list[str] = Field(default_factory=list)
    reasons: str = Field(default="", description="The judge's analysis, or why there is no verdict.")
    source_id: str | None = Field(default=None, description="The chunk or document it was judged against.")
    stratum: str = Field(default="", description="source | difficulty: what the sample was stratified by.")
    judge: str
    prompt: str = Field(description="The judge prompt's name and version, e.g. 'judge_qa/v1'.")
    status: str = Field(description="The call's outcome: ok, cached, failed or budget.")
    cost_usd: float = 0.0
