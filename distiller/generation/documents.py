"""Documents for queries.

Bootstrap mode (no corpus exists): per query, positives that answer it and negatives that look relevant
but do not, at a planned length; the documents become the retrieval corpus (`passages.parquet`), the
query's `positive_ids` point at its positives, and its short answer makes a Q&A pair (qa_id = query_id,
so a judge's rejection of the pair is also a rejection of the query).

Document mode (optional, `generation.document_negatives`): contrastive negatives per query against its
chunk. They stay out of the corpus (the corpus is the user's documents) and only feed training, as
`generated` triplets.

Triplets are written for training-split queries only: held-out text never reaches a training artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distiller.generation.context import GenContext
from distiller.generation.plan import deal, rotation, row_start
from distiller.llm import LLMRequest
from distiller.prompts import quoted
from distiller.prompts.documents import (
    DOCUMENTS,
    NEGATIVES,
    RELATED,
    STRATEGIES,
    DocumentSet,
    NegativeDoc,
    NegativeSet,
    negatives_request,
    strategy_lines,
)
from distiller.records import GeneratedDocument, Passage, QAPair, Query, Triplet

STAGE = "generate"
Role = Literal["positive", "negative"]
TOKENS_PER_WORD = 2.0
"""Output tokens a word may take (German compounds and accented text take more than English's ~1.3)."""
ANSWER_TOKENS = 400
"""Room for the short answer, the reasoning and the negatives' explanations."""


@dataclass(frozen=True)
class DocPlan:
    length: str
    words: str
    strategies: list[str]


@dataclass
class DocumentsOut:
    documents: list[GeneratedDocument] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    qa_pairs: list[QAPair] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    without_documents: int = 0
    copies_dropped: int = 0
    """Negatives that repeated a positive word for word: a copy of the answer is no negative."""


def strategies_in_use(ctx: GenContext) -> list[str]:
    gen = ctx.cfg.generation
    if not gen.contrastive:
        return [RELATED]
    return list(gen.negative_strategies or STRATEGIES)


def _plan_strategies(ctx: GenContext, query_id: str) -> list[str]:
    # n strategies in turn from a start hashed from the query's id: over many queries each strategy is
    # used about equally, and a query's plan does not move when other queries come or go.
    n = ctx.cfg.generation.negatives_per_query
    used = strategies_in_use(ctx)
    if not ctx.cfg.generation.contrastive:
        return [RELATED] * n
    return rotation(used, row_start(len(used), ctx.seed, "negatives:strategy", query_id), n)


def _max_tokens(ctx: GenContext, n_docs: int, max_words: int) -> int:
    # A long document set does not fit the endpoint's default max_tokens: truncated answers fail to parse
    # and are paid for again. The budget reserves this bound, so it is sized to the plan, not padded.
    need = int(n_docs * max_words * TOKENS_PER_WORD) + ANSWER_TOKENS
    return max(ctx.cfg.teacher.max_tokens, need)


def document_requests(
    queries: Sequence[Query], about: Mapping[str, str], ctx: GenContext
) -> tuple[list[LLMRequest], dict[str, DocPlan]]:
    """`about`: concept_id -> its term (or relationship), shown to the model as the query's subject."""
    gen = ctx.cfg.generation
    requests, plans = [], {}
    for q in queries:
        length = deal(ctx.domain.length_mix, 1, ctx.seed, "documents:length", q.query_id)[0]
        lo, hi = ctx.domain.length_words[length]
        plan = DocPlan(length, f"{lo}-{hi}", _plan_strategies(ctx, q.query_id))
        plans[q.query_id] = plan
        requests.append(
            DOCUMENTS.request(
                q.query_id,
                STAGE,
                ctx.fields(
                    query=q.text,
                    complexity=q.complexity or "intermediate",
                    query_type=q.query_type or "factual",
                    about=about.get(q.concept_id or "", ", ".join(q.key_concepts)),
                    n_pos=gen.positives_per_query,
                    words=plan.words,
                    strategy_lines=strategy_lines(gen.contrastive),
                    negatives_request=negatives_request(plan.strategies, plan.words),
                ),
                max_tokens=_max_tokens(ctx, gen.positives_per_query + len(plan.strategies), hi),
            )
        )
    return requests, plans


def _document(
    q: Query, role: Role, j: int, text: str, length: str, ctx: GenContext, **extra: Any
) -> GeneratedDocument:
    return GeneratedDocument(
        document_id=f"{q.query_id}-{role[0]}{j}",
        query_id=q.query_id,
        role=role,
        text=text.strip(),
        length=length,
        doc_id=q.doc_id,
        concept_id=q.concept_id,
        chunk_id=q.chunk_id,
        language=ctx.language.code,
        teacher=ctx.teacher,
        **extra,
    )


def _same(a: str) -> str:
    return " ".join(a.casefold().split())


def _negatives(
    q: Query,
    negs: Sequence[NegativeDoc],
    plan: DocPlan,
    positives: Sequence[str],
    out: DocumentsOut,
    ctx: GenContext,
) -> list[GeneratedDocument]:
    """The answer's negatives in slot order, each labelled with the strategy its slot asked for; one that
    copies a positive is dropped (and counted)."""
    copies = {_same(p) for p in positives}
    docs = [
        _document(
            q,
            "negative",
            j,
            neg.text,
            plan.length,
            ctx,
            strategy=strategy,
            explanation=neg.explanation.strip() or None,
        )
        for j, (neg, strategy) in enumerate(zip(negs, plan.strategies, strict=False))
        if neg.text.strip()
    ]
    kept = [d for d in docs if _same(d.text) not in copies]
    out.copies_dropped += len(docs) - len(kept)
    return kept


def _triplets(
    q: Query, positives: Sequence[tuple[str, str]], negatives: Sequence[GeneratedDocument]
) -> list[Triplet]:
    if q.split != "train":
        return []
    return [
        Triplet(
            query_id=q.query_id,
            query=q.text,
            positive_id=pid,
            positive=ptext,
            negative_id=n.document_id,
            negative=n.text,
            kind="generated",
            iteration=0,
        )
        for pid, ptext in positives
        for n in negatives
    ]


def to_documents(
    queries: Sequence[Query],
    answers: Mapping[str, DocumentSet],
    plans: Mapping[str, DocPlan],
    ctx: GenContext,
) -> DocumentsOut:
    """Bootstrap mode. A query whose documents never came (failed, or not sent for the budget) is dropped:
    with no positive it can neither train nor be evaluated."""
    out = DocumentsOut()
    for q in queries:
        ans, plan = answers.get(q.query_id), plans[q.query_id]
        positives = [p.text.strip() for p in ans.positives if p.text.strip()] if ans else []
        if ans is None or not positives:
            out.without_documents += 1
            continue
        pos_docs = [_document(q, "positive", j, text, plan.length, ctx) for j, text in enumerate(positives)]
        neg_docs = _negatives(q, ans.negatives, plan, positives, out, ctx)
        out.documents += pos_docs + neg_docs
        out.passages += [
            Passage(passage_id=d.document_id, doc_id=d.doc_id, chunk_id=None, text=d.text)
            for d in pos_docs + neg_docs
        ]
        query = q.model_copy(update={"positive_ids": [d.document_id for d in pos_docs]})
        out.queries.append(query)
        out.qa_pairs.append(
            QAPair(
                qa_id=q.query_id,
                question=q.text,
                answer=ans.answer.strip(),
                reasoning=ans.reasoning.strip() or None,
                difficulty=q.complexity,
                source_chunk=pos_docs[0].document_id,
                doc_id=q.doc_id,
                split=q.split,
                teacher=ctx.teacher,
            )
        )
        out.triplets += _triplets(query, [(d.document_id, d.text) for d in pos_docs], neg_docs)
    return out


def negative_requests(
    queries: Sequence[Query], passages: Mapping[str, Passage], ctx: GenContext
) -> tuple[list[LLMRequest], dict[str, DocPlan]]:
    """Document mode: negatives for each query, as long as its chunk (see the module doc of the prompt)."""
    requests, plans = [], {}
    for q in queries:
        passage = passages.get(q.positive_ids[0]) if q.positive_ids else None
        if passage is None:
            continue
        n_words = len(passage.text.split())
        words = f"{max(20, int(n_words * 0.8))}-{max(30, int(n_words * 1.2))}"
        plan = DocPlan("chunk", words, _plan_strategies(ctx, q.query_id))
        plans[q.query_id] = plan
        requests.append(
            NEGATIVES.request(
                q.query_id,
                STAGE,
                ctx.fields(
                    query=q.text,
                    passage=quoted(passage.text),
                    strategy_lines=strategy_lines(ctx.cfg.generation.contrastive),
                    negatives_request=negatives_request(plan.strategies, words),
                ),
                max_tokens=_max_tokens(ctx, len(plan.strategies), int(n_words * 1.2) + 10),
            )
        )
    return requests, plans


def to_negatives(
    queries: Sequence[Query],
    answers: Mapping[str, NegativeSet],
    plans: Mapping[str, DocPlan],
    passages: Mapping[str, Passage],
    ctx: GenContext,
) -> DocumentsOut:
    out = DocumentsOut()
    for q in queries:
        ans = answers.get(q.query_id)
        if ans is None:
            continue
        pos = passages[q.positive_ids[0]]
        negs = _negatives(q, ans.negatives, plans[q.query_id], [pos.text], out, ctx)
        out.documents += negs
        out.triplets += _triplets(q, [(pos.passage_id, pos.text)], negs)
    return out


__all__ = [
    "DocPlan",
    "DocumentsOut",
    "document_requests",
    "negative_requests",
    "strategies_in_use",
    "to_documents",
    "to_negatives",
]
