"""What a run's LLM stages will ask, before anything is spent (`distill estimate`).

The plan is made of the very requests the stages send, rendered by the same builders from the same
prompts and templates, so their prompt sizes are the real ones and a request already in the call cache
is known to cost nothing. Where a request's input is itself an answer the teacher has not written yet
(a query's negatives need the query; bootstrap's queries need concepts; the judge needs Q&A pairs), the
answer is stood in for by placeholder text of a typical length (`STANDIN_WORDS`), and the plan says so.

Counts follow the configuration: `queries_per_chunk`, `questions_per_chunk`, `negatives_per_query`,
`concepts`/`concepts_per_call`, `queries_per_concept`, the judge's `sample_rate`. Near-duplicate removal
and failed answers can only make the real run smaller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from distiller.config import DistillConfig, LLMConfig
from distiller.generation import bootstrap_mode
from distiller.generation.bootstrap import concepts_round_requests, relationship_requests
from distiller.generation.context import GenContext
from distiller.generation.documents import document_requests, negative_requests
from distiller.generation.qa import qa_requests
from distiller.generation.queries import chunk_requests, concept_requests
from distiller.generation.validation import (
    JudgeItem,
    Kind,
    judge_endpoint,
    judge_request,
    qa_items,
    query_items,
    sample_sizes,
    stable_sample,
)
from distiller.llm import CallCache, LLMRequest
from distiller.llm.estimate import estimate_cost
from distiller.llm.plan import BudgetPlan, PlannedStep
from distiller.records import Chunk, Concept, Passage, QAPair, Query

STANDIN_WORDS = {"query": 14, "answer": 60, "definition": 35, "example": 20, "document": 120}
"""Typical lengths, in words, of texts the teacher writes, used where a request quotes one."""


def standin(n_words: int) -> str:
    # Six characters a word, as English averages with its space.
    return " ".join(["lorem"] * n_words)


@dataclass
class RunPlan:
    """Every request a run's LLM stages would send, with its endpoint per stage and one line per step."""

    requests: list[LLMRequest] = field(default_factory=list)
    endpoints: dict[str, LLMConfig] = field(default_factory=dict)
    steps: list[tuple[str, str, int]] = field(default_factory=list)
    """(stage, step, requests)."""
    notes: list[str] = field(default_factory=list)

    def add(self, stage: str, step: str, requests: Sequence[LLMRequest], endpoint: LLMConfig) -> None:
        self.requests += requests
        self.endpoints.setdefault(stage, endpoint)
        self.steps.append((stage, step, len(requests)))


def plan_run(cfg: DistillConfig, chunks: Sequence[Chunk] = ()) -> RunPlan:
    """The requests of bootstrap (bootstrap mode), generate and validate. `chunks`: document mode's
    corpus, as the ingest stage wrote it."""
    ctx = GenContext.from_config(cfg)
    plan = RunPlan()
    if bootstrap_mode(cfg):
        concepts = _plan_bootstrap(cfg, ctx, plan)
        queries, passages, qa_pairs = _plan_from_concepts(cfg, ctx, plan, concepts)
    else:
        queries, passages, qa_pairs = _plan_from_chunks(cfg, ctx, plan, list(chunks))
    if cfg.validation.enabled and cfg.validation.sample_rate > 0:
        _plan_judge(cfg, ctx, plan, queries, passages, qa_pairs, bootstrap_mode(cfg))
    if cfg.mining.judge_negatives and not judge_endpoint(cfg).offline:
        _plan_mining_judge(cfg, ctx, plan, queries, passages)
    plan.notes.append(
        "texts the teacher has not written yet (queries, answers, concepts, documents) are stood in for by "
        "placeholders of typical length: " + ", ".join(f"{k} {v} words" for k, v in STANDIN_WORDS.items())
    )
    return plan


def _plan_bootstrap(cfg: DistillConfig, ctx: GenContext, plan: RunPlan) -> list[Concept]:
    gen = cfg.generation
    n_calls = math.ceil(gen.concepts / gen.concepts_per_call)
    # The first round as bootstrap sends it: later rounds happen only when answers repeat terms.
    n_each = min(gen.concepts_per_call, gen.concepts)
    requests = concepts_round_requests(ctx, 1, n_calls, n_each, 0, 0, "(none yet)")
    plan.add("bootstrap", "concepts (first round; more only if answers repeat)", requests, cfg.teacher)
    concepts = [
        Concept(
            concept_id=f"c{i}",
            kind="concept",
            term=f"term {i}",
            definition=standin(STANDIN_WORDS["definition"]),
            examples=[standin(STANDIN_WORDS["example"])],
            related_terms=["term a", "term b"],
            domain=ctx.domain_name,
            language=ctx.language.code,
            teacher=ctx.teacher,
        )
        for i in range(gen.concepts)
    ]
    if gen.relationships_per_call and gen.concepts >= 2:
        rel = relationship_requests(ctx, [c.term for c in concepts])
        plan.add("bootstrap", "relationships", rel, cfg.teacher)
        concepts += [
            c.model_copy(update={"concept_id": f"r{i}", "kind": "relationship"})
            for i, c in enumerate(concepts[: len(rel) * gen.relationships_per_call])
        ]
    return concepts


def _plan_from_concepts(
    cfg: DistillConfig, ctx: GenContext, plan: RunPlan, concepts: list[Concept]
) -> tuple[list[Query], list[Passage], list[QAPair]]:
    q_reqs, _, _ = concept_requests(concepts, ctx)
    plan.add("generate", "queries", q_reqs, cfg.teacher)
    queries = [
        Query(
            query_id=f"{c.concept_id}-q{j}",
            text=standin(STANDIN_WORDS["query"]),
            positive_ids=[f"{c.concept_id}-q{j}-pos"],
            doc_id=c.concept_id,
            concept_id=c.concept_id,
            teacher=ctx.teacher,
        )
        for c in concepts
        for j in range(cfg.generation.queries_per_concept)
    ]
    d_reqs, _ = document_requests(queries, {c.concept_id: c.term for c in concepts}, ctx)
    plan.add("generate", "documents (positives and negatives)", d_reqs, cfg.teacher)
    passages = [
        Passage(passage_id=q.positive_ids[0], doc_id=q.doc_id, text=standin(STANDIN_WORDS["document"]))
        for q in queries
    ]
    qa_pairs = [_standin_qa(q.query_id, q.positive_ids[0], q.doc_id, ctx) for q in queries]
    return queries, passages, qa_pairs


def _plan_from_chunks(
    cfg: DistillConfig, ctx: GenContext, plan: RunPlan, chunks: list[Chunk]
) -> tuple[list[Query], list[Passage], list[QAPair]]:
    gen = cfg.generation
    q_reqs, _, _ = chunk_requests(chunks, ctx)
    plan.add("generate", "queries", q_reqs, cfg.teacher)
    qa_reqs, _ = qa_requests(chunks, ctx)
    plan.add("generate", "Q&A pairs", qa_reqs, cfg.teacher)
    passages = [
        Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
    ]
    queries = [
        Query(
            query_id=f"{c.chunk_id}-q{j}",
            text=standin(STANDIN_WORDS["query"]),
            positive_ids=[c.chunk_id],
            doc_id=c.doc_id,
            chunk_id=c.chunk_id,
            teacher=ctx.teacher,
        )
        for c in chunks
        for j in range(gen.queries_per_chunk)
    ]
    if gen.document_negatives and gen.negatives_per_query > 0:
        n_reqs, _ = negative_requests(queries, {p.passage_id: p for p in passages}, ctx)
        plan.add("generate", "contrastive negatives", n_reqs, cfg.teacher)
    qa_pairs = [
        _standin_qa(f"{c.chunk_id}-qa{j}", c.chunk_id, c.doc_id, ctx)
        for c in chunks
        for j in range(gen.questions_per_chunk)
    ]
    return queries, passages, qa_pairs


def _standin_qa(qa_id: str, source: str, doc_id: str, ctx: GenContext) -> QAPair:
    return QAPair(
        qa_id=qa_id,
        question=standin(STANDIN_WORDS["query"]),
        answer=standin(STANDIN_WORDS["answer"]),
        source_chunk=source,
        doc_id=doc_id,
        teacher=ctx.teacher,
    )


def _plan_judge(
    cfg: DistillConfig,
    ctx: GenContext,
    plan: RunPlan,
    queries: list[Query],
    passages: list[Passage],
    qa_pairs: list[QAPair],
    bootstrap: bool,
) -> None:
    by_id = {p.passage_id: p for p in passages}
    pools: dict[Kind, list[JudgeItem]] = {"qa": qa_items(qa_pairs, by_id)}
    if not bootstrap and cfg.validation.judge_queries:
        pools["query"] = query_items(queries, by_id, skip={qa.qa_id for qa in qa_pairs})
    sizes = sample_sizes({k: len(v) for k, v in pools.items()}, cfg.validation.sample_rate, None)
    for kind, pool in pools.items():
        sample = stable_sample(pool, sizes[kind], cfg.seed)
        step = "judge Q&A pairs" if kind == "qa" else "judge queries"
        plan.add("validate", step, [judge_request(it, ctx) for it in sample], judge_endpoint(cfg))
    plan.notes.append(
        f"the judge's sample is sample_rate {cfg.validation.sample_rate:g} of the rows; a validation budget "
        "smaller than its cost shrinks the sample (the run says by how much)"
    )


def _plan_mining_judge(
    cfg: DistillConfig, ctx: GenContext, plan: RunPlan, queries: list[Query], passages: list[Passage]
) -> None:
    from distiller.records import Triplet
    from distiller.retrieval.mining_judge import negative_request

    train = [q for q in queries if q.split == "train"] or queries
    n = min(cfg.mining.judge_negatives_max, len(train))
    texts = [p.text for p in passages] or [standin(STANDIN_WORDS["document"])]
    for k in range(1, cfg.mining.iterations + 1):
        stand = [
            Triplet(
                query_id=q.query_id, query=q.text, positive_id="p", positive="", negative_id=f"n{i}",
                negative=texts[i % len(texts)], kind="hard", iteration=k,
            )
            for i, q in enumerate(train[:n])
        ]  # fmt: skip
        reqs = [negative_request(t, ctx, f"mine_iter{k}") for t in stand]
        plan.add(f"mine_iter{k}", "false-negative check", reqs, judge_endpoint(cfg))
    plan.notes.append(
        "the mining judge is planned at its most (one negative per training query, up to "
        "judge_negatives_max): only negatives that outrank their positive are asked"
    )


def budget_plan(
    cfg: DistillConfig, chunks: Sequence[Chunk], cache: CallCache | None, spent_usd: float = 0.0
) -> BudgetPlan:
    """The run's LLM steps with their expected cost (requests already in the call cache are free), for
    splitting the budget over them (llm/plan.py)."""
    plan = plan_run(cfg, chunks)
    steps: list[PlannedStep] = []
    k = 0
    for stage, step, n in plan.steps:
        reqs = plan.requests[k : k + n]
        k += n
        est = estimate_cost(reqs, plan.endpoints, cache=cache)
        s = est.stages[0] if est.stages else None
        steps.append(
            PlannedStep(
                stage=stage,
                step=step,
                requests=n,
                to_send=s.calls if s else 0,
                expected_usd=(s.expected_cost_usd or 0.0) if s else 0.0,
            )
        )
    return BudgetPlan(
        steps=steps, budget_usd=cfg.budget.run_usd, spent_usd=spent_usd, policy=cfg.budget.policy
    )


__all__ = ["STANDIN_WORDS", "RunPlan", "budget_plan", "plan_run"]
