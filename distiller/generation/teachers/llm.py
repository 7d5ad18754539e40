"""The LLM teacher behind the generate stage.

Document mode (`generate_with_llm`): per chunk, queries (the chunk is their positive, passage_id =
chunk_id) and grounded Q&A pairs; near-duplicate queries removed; optionally contrastive negatives per
query, kept as `generated` triplets.

Bootstrap mode (`generate_from_concepts`): per concept or relationship, queries; near-duplicates removed
*before* documents are paid for; per query, positives and negatives that become the corpus.

Both also write `documents.parquet` and `triplets_generated.parquet` (possibly empty) next to the
artifacts the pipeline writes; the mine stage adds the generated triplets to its first iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distiller.config import DistillConfig
from distiller.generation.context import GenContext
from distiller.generation.dedup import Encoder, Removed, dedup_queries, student_encoder
from distiller.generation.documents import (
    DocumentsOut,
    document_requests,
    negative_requests,
    to_documents,
    to_negatives,
)
from distiller.generation.qa import qa_requests, to_qa_pairs
from distiller.generation.queries import chunk_requests, concept_requests, to_queries
from distiller.generation.runner import StageLLM
from distiller.generation.teachers.base import GenerationOutput, document_splits
from distiller.prompts.documents import DocumentSet, NegativeSet
from distiller.prompts.qa import QABatch
from distiller.prompts.queries import QueryBatch
from distiller.records import (
    Chunk,
    Concept,
    GeneratedDocument,
    Passage,
    QAPair,
    Query,
    Split,
    Triplet,
    write_parquet,
)
from distiller.splits import assign_groups
from distiller.store import RunStore

if TYPE_CHECKING:
    from distiller.generation.shards import GenerateShard

STAGE = "generate"
LLM_OUTPUTS = ("documents.parquet", "triplets_generated.parquet")
"""What the LLM teacher writes besides passages, queries and Q&A pairs."""


def _dedup(
    queries: list[Query], cfg: DistillConfig, encoder: Encoder | None
) -> tuple[list[Query], list[Removed]]:
    if len(queries) < 2:
        return queries, []
    return dedup_queries(queries, encoder or student_encoder(cfg), cfg.generation.dedup_threshold)


def _write_extras(store: RunStore, docs: DocumentsOut) -> None:
    write_parquet(store.path("documents.parquet"), docs.documents, GeneratedDocument)
    write_parquet(store.path("triplets_generated.parquet"), docs.triplets, Triplet)


def _notes(llm: StageLLM, removed: Sequence[Removed], n_queries: int) -> list[str]:
    notes = []
    if removed:
        notes.append(f"{len(removed)} near-duplicate queries removed of {n_queries + len(removed)}")
    notes += llm.notes
    if llm.failures:
        shown = "; ".join(f"{f.item_id}: {f.error[:120]}" for f in llm.failures[:3])
        notes.append(f"{len(llm.failures)} requests failed (see ledger.parquet): {shown}")
    return notes


def _stats(llm: StageLLM, removed: Sequence[Removed], docs: DocumentsOut) -> dict[str, object]:
    return {
        "near_duplicates_removed": len(removed),
        "documents": len(docs.documents),
        "generated_triplets": len(docs.triplets),
        "negatives_copying_a_positive": docs.copies_dropped,
        "failed_requests": len(llm.failures),
        "cost_usd": round(llm.cost_usd, 6),
        # The estimate of the calls sent and their bill, per run of the stage (the manifest keeps both).
        "estimated_usd": round(llm.estimated_usd, 6),
        "billed_usd": round(llm.cost_usd, 6),
        "stopped_by_budget": llm.budget_stopped,
        "llm_steps": llm.steps,
    }


def generate_with_llm(
    chunks: list[Chunk],
    cfg: DistillConfig,
    store: RunStore,
    encoder: Encoder | None = None,
    shards: list[GenerateShard] | None = None,
) -> GenerationOutput:
    """`shards`: the chunks' shards (`distiller.generation.shards`); their queries and Q&A pairs are
    read from the run folder, and the ones not done are written here, one after another, first."""
    ctx = GenContext.from_config(cfg)
    gen = cfg.generation
    splits = document_splits(chunks, cfg.split.train_ratio, cfg.split.val_ratio, cfg.seed)
    # The corpus is the chunks themselves: a query's positive is its chunk (passage_id = chunk_id).
    passages = [
        Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
    ]
    merged = _run_shards(shards, chunks, splits, cfg, store) if shards is not None else None
    # Opened after the shards: its budget starts from everything they spent.
    with StageLLM(cfg, store.dir, STAGE) as llm:
        if merged is not None:
            queries, qa_pairs, shard_meta = merged
            llm.absorb(shard_meta)
        else:
            q_reqs, sources, slots = chunk_requests(chunks, ctx)
            answers = llm.answers(llm.run("queries", q_reqs), QueryBatch)
            queries = to_queries(sources, answers, slots, splits, ctx)
            qa_reqs, plan = qa_requests(chunks, ctx)
            qa_pairs = to_qa_pairs(
                chunks, llm.answers(llm.run("Q&A pairs", qa_reqs), QABatch), plan, splits, ctx
            )
        queries, removed = _dedup(queries, cfg, encoder)
        docs = DocumentsOut()
        if gen.document_negatives and gen.negatives_per_query > 0:
            by_id = {p.passage_id: p for p in passages}
            n_reqs, n_plans = negative_requests(queries, by_id, ctx)
            neg_answers = llm.answers(llm.run("negatives", n_reqs), NegativeSet)
            docs = to_negatives(queries, neg_answers, n_plans, by_id, ctx)
    _write_extras(store, docs)
    with_query = {q.chunk_id for q in queries}
    return GenerationOutput(
        passages=passages,
        queries=queries,
        qa_pairs=qa_pairs,
        notes=_notes(llm, removed, len(queries)),
        stats={
            "queries": len(queries),
            "chunks_without_query": sum(c.chunk_id not in with_query for c in chunks),
            **_stats(llm, removed, docs),
            **(merged[2]["shards"] if merged is not None else {}),
        },
    )


def _run_shards(
    shards: list[GenerateShard],
    chunks: list[Chunk],
    splits: dict[str, Split],
    cfg: DistillConfig,
    store: RunStore,
) -> tuple[list[Query], list[QAPair], dict[str, Any]]:
    """Write the shards not done (one after another, each with its share of what is left), then merge
    every shard's rows in chunk order, with the split of the run's documents."""
    from distiller.generation.grants import run_one_by_one, this_pass
    from distiller.generation.shards import generate_shard, read_shard

    run_one_by_one(shards, cfg, store.dir, generate_shard)
    order = {c.chunk_id: n for n, c in enumerate(chunks)}
    queries: list[Query] = []
    qa_pairs: list[QAPair] = []
    for spec in shards:
        q, qa = read_shard(spec)
        queries += q
        qa_pairs += qa
    queries.sort(key=lambda q: order.get(q.chunk_id or "", len(order)))
    qa_pairs.sort(key=lambda p: order.get(p.source_chunk or "", len(order)))
    queries = [q.model_copy(update={"split": splits.get(q.doc_id, "train")}) for q in queries]
    qa_pairs = [p.model_copy(update={"split": splits.get(p.doc_id or "", "train")}) for p in qa_pairs]
    return queries, qa_pairs, this_pass(shards, "generated")


def generate_from_concepts(
    concepts: list[Concept], cfg: DistillConfig, store: RunStore, encoder: Encoder | None = None
) -> GenerationOutput:
    ctx = GenContext.from_config(cfg)
    # The concept (or relationship) is the split unit: its queries and documents stay on one side.
    splits = {
        str(k): v
        for k, v in assign_groups(
            [c.concept_id for c in concepts], cfg.split.train_ratio, cfg.split.val_ratio, cfg.seed
        ).items()
    }
    about = {c.concept_id: c.term for c in concepts}
    with StageLLM(cfg, store.dir, STAGE) as llm:
        q_reqs, sources, slots = concept_requests(concepts, ctx)
        answers = llm.answers(llm.run("queries", q_reqs), QueryBatch)
        queries, removed = _dedup(to_queries(sources, answers, slots, splits, ctx), cfg, encoder)
        d_reqs, plans = document_requests(queries, about, ctx)
        docs = to_documents(queries, llm.answers(llm.run("documents", d_reqs), DocumentSet), plans, ctx)
    _write_extras(store, docs)
    notes = _notes(llm, removed, len(queries))
    if docs.without_documents:
        notes.append(f"{docs.without_documents} queries dropped: their documents did not come back")
    return GenerationOutput(
        passages=docs.passages,
        queries=docs.queries,
        qa_pairs=docs.qa_pairs,
        notes=notes,
        stats={
            "concepts": sum(c.kind == "concept" for c in concepts),
            "relationships": sum(c.kind == "relationship" for c in concepts),
            "queries_without_documents": docs.without_documents,
            **_stats(llm, removed, docs),
        },
    )


__all__ = ["LLM_OUTPUTS", "generate_from_concepts", "generate_with_llm"]
