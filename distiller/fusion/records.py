"""Records of a fusion run. The fused run folder keeps the ordinary artifacts (passages, queries,
qa_pairs, triplets: plain `Passage`/`Query`/`QAPair`/`Triplet`, so mining, export and the report read them
unchanged) and puts what is fusion-specific beside them: where each row came from (`provenance.parquet`),
how each integrated answer was put together (`integrated.parquet`), and the retention figures."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distiller.records import Record


class Provenance(Record):
    """Which generator made a row of the fused run, and from which domain(s)."""

    item_id: str = Field(description="A query_id, qa_id, passage_id, or 'query_id|negative_id' of a triplet.")
    item_kind: Literal["query", "qa", "passage", "triplet"]
    generator: str = Field(description="single, cross, adversarial, curated, integrated, or a user's own.")
    domains: list[str] = Field(description="The domain(s) the row draws on, in order (A then B).")
    teacher: str = Field(
        default="", description="Who wrote it: a model, 'offline-concat', 'bm25', 'curated'."
    )


class IntegratedAnswer(Record):
    """A cross-domain question answered by each domain's teacher and merged by the integrator."""

    qa_id: str
    question: str
    answer: str
    integration: Literal["concat", "llm"]
    integrator: str
    domains: list[str]
    domain_answers: list[str] = Field(description="Each domain teacher's answer, in `domains` order.")
    domain_teachers: list[str]
    contributions: list[str] = Field(description="What each domain contributed to the answer, in order.")
    contradictions: list[str] = Field(
        default_factory=list, description="Each contradiction between the answers and how it was resolved."
    )


class RetentionRow(Record):
    """One figure of the retention evaluation (`retention.parquet`)."""

    strategy: str = Field(description="The fused model's strategy; '' for base and specialists.")
    domain: str = Field(description="A domain, or 'cross' for Cross-Domain Accuracy.")
    model: str = Field(description="base, specialist, fused")
    metric: str
    value: float
    n_queries: int


__all__ = ["IntegratedAnswer", "Provenance", "RetentionRow"]
