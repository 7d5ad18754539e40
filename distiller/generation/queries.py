"""Search queries from concepts (bootstrap mode) or from chunks (document mode).

Each source row gets one request for all its queries; every query's complexity and type are planned
beforehand from the configured mix and the row's own id (`plan.deal`), so the data set's mix is the
configured one and a row's prompt does not move when other rows come or go. A query remembers where it came
from (`concept_id` or `chunk_id`) and the split group it belongs to (`doc_id`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distiller.generation.context import GenContext
from distiller.generation.plan import deal
from distiller.llm import LLMRequest
from distiller.prompts import Prompt, numbered, quoted
from distiller.prompts.queries import FROM_CHUNK, FROM_CONCEPT, QueryBatch
from distiller.records import Chunk, Concept, Query, Split

STAGE = "generate"
PAIR_TYPES = ("comparative", "scenario")
"""Query types a relationship (two concepts) is best asked about, when the template has them."""


@dataclass(frozen=True)
class Slot:
    complexity: str
    query_type: str

    def line(self) -> str:
        return f"complexity: {self.complexity}; type: {self.query_type}"


@dataclass(frozen=True)
class QuerySource:
    """One row queries are asked for."""

    item_id: str
    doc_id: str
    concept_id: str | None = None
    chunk_id: str | None = None
    key_terms: tuple[str, ...] = ()


def plan_slots(
    item_ids: Sequence[str],
    per_item: int,
    ctx: GenContext,
    salt: str,
    types: Mapping[str, float] | None = None,
) -> dict[str, list[Slot]]:
    # Each row's slots from its own id (plan.deal): adding rows leaves the old rows' prompts as they were.
    out = {}
    for item in item_ids:
        complexities = deal(ctx.domain.complexity_mix, per_item, ctx.seed, f"{salt}:complexity", item)
        qtypes = deal(types or ctx.domain.query_types, per_item, ctx.seed, f"{salt}:type", item)
        out[item] = [Slot(c, t) for c, t in zip(complexities, qtypes, strict=True)]
    return out


def slot_requests(
    prompt: Prompt,
    items: Sequence[tuple[str, dict[str, Any]]],
    ctx: GenContext,
    slots: Mapping[str, list[str]],
) -> list[LLMRequest]:
    """One request per row: its own fields, how many rows to write, and the numbered slots they fill."""
    return [
        prompt.request(
            item_id,
            STAGE,
            ctx.fields(**fields, n=len(slots[item_id]), slots=numbered(slots[item_id])),
        )
        for item_id, fields in items
    ]


def chunk_fields(chunk: Chunk) -> dict[str, Any]:
    return {"source": chunk_source(chunk), "passage": quoted(chunk.text)}


def concept_material(c: Concept) -> str:
    if c.kind == "relationship":
        lines = [f"Relationship: {c.term}", f"Description: {c.definition}"]
        lines += [f"Example: {e}" for e in c.examples[:3]]
        return "\n".join(lines)
    lines = [f"Concept: {c.term}", f"Definition: {c.definition}"]
    lines += [f"Example: {e}" for e in c.examples[:2]]
    if c.related_terms:
        lines.append(f"Related terms: {', '.join(c.related_terms)}")
    return "\n".join(lines)


def concept_requests(
    concepts: Sequence[Concept], ctx: GenContext
) -> tuple[list[LLMRequest], list[QuerySource], dict[str, list[Slot]]]:
    per = ctx.cfg.generation.queries_per_concept
    singles = [c.concept_id for c in concepts if c.kind == "concept"]
    pairs = [c.concept_id for c in concepts if c.kind == "relationship"]
    pair_types = {t: w for t, w in ctx.domain.query_types.items() if t in PAIR_TYPES} or None
    slots = plan_slots(singles, per, ctx, "concepts") | plan_slots(
        pairs, per, ctx, "relationships", pair_types
    )
    sources = [
        QuerySource(c.concept_id, c.concept_id, concept_id=c.concept_id, key_terms=_terms(c))
        for c in concepts
    ]
    lines = {k: [s.line() for s in v] for k, v in slots.items()}
    items = [(c.concept_id, {"material": concept_material(c)}) for c in concepts]
    return slot_requests(FROM_CONCEPT, items, ctx, lines), sources, slots


def _terms(c: Concept) -> tuple[str, ...]:
    return tuple(c.related_terms[:2]) if c.kind == "relationship" else (c.term,)


def chunk_source(chunk: Chunk) -> str:
    return f"{Path(chunk.source_path).name}, part {chunk.chunk_index + 1}"


def chunk_requests(
    chunks: Sequence[Chunk], ctx: GenContext
) -> tuple[list[LLMRequest], list[QuerySource], dict[str, list[Slot]]]:
    per = ctx.cfg.generation.queries_per_chunk
    slots = plan_slots([c.chunk_id for c in chunks], per, ctx, "chunks")
    sources = [QuerySource(c.chunk_id, c.doc_id, chunk_id=c.chunk_id) for c in chunks]
    lines = {k: [s.line() for s in v] for k, v in slots.items()}
    items = [(c.chunk_id, chunk_fields(c)) for c in chunks]
    return slot_requests(FROM_CHUNK, items, ctx, lines), sources, slots


def to_queries(
    sources: Sequence[QuerySource],
    answers: Mapping[str, QueryBatch],
    slots: Mapping[str, list[Slot]],
    splits: Mapping[str, Split],
    ctx: GenContext,
) -> list[Query]:
    """Queries in source order; a source with no answer has none (its failure is in the ledger). Labels
    come from the slot asked for; extra queries beyond the slots are ignored."""
    out: list[Query] = []
    for src in sources:
        batch = answers.get(src.item_id)
        if batch is None:
            continue
        seen: set[str] = set()
        for i, (item, slot) in enumerate(zip(batch.queries, slots[src.item_id], strict=False)):
            text = " ".join(item.text.split())
            if not text or text.casefold() in seen:
                continue
            seen.add(text.casefold())
            out.append(
                Query(
                    query_id=f"{src.item_id}-q{i}",
                    text=text,
                    # Document mode: the chunk is the positive (passage_id = chunk_id). Bootstrap mode:
                    # the documents stage writes the positives and fills this in.
                    positive_ids=[src.chunk_id] if src.chunk_id else [],
                    doc_id=src.doc_id,
                    chunk_id=src.chunk_id,
                    concept_id=src.concept_id,
                    split=splits.get(src.doc_id, "train"),
                    teacher=ctx.teacher,
                    language=ctx.language.code,
                    complexity=slot.complexity,
                    query_type=slot.query_type,
                    answer_type=item.answer_type.strip() or None,
                    key_concepts=[k.strip() for k in item.key_concepts if k.strip()] or list(src.key_terms),
                )
            )
    return out


__all__ = [
    "QuerySource",
    "Slot",
    "chunk_requests",
    "chunk_source",
    "concept_material",
    "concept_requests",
    "plan_slots",
    "to_queries",
]
