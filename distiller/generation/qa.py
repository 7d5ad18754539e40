"""Question-answer pairs per chunk (document mode): `questions_per_chunk` pairs, each with a planned
difficulty, an answer grounded in the chunk, the teacher's reasoning and the chunk it came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from distiller.generation.context import GenContext
from distiller.generation.plan import deal
from distiller.generation.queries import chunk_fields, slot_requests
from distiller.llm import LLMRequest
from distiller.prompts.qa import QA, QABatch
from distiller.records import Chunk, QAPair, Split


def plan_difficulty(chunks: Sequence[Chunk], per: int, ctx: GenContext) -> dict[str, list[str]]:
    mix = ctx.domain.complexity_mix
    return {c.chunk_id: deal(mix, per, ctx.seed, "qa:difficulty", c.chunk_id) for c in chunks}


def qa_requests(chunks: Sequence[Chunk], ctx: GenContext) -> tuple[list[LLMRequest], dict[str, list[str]]]:
    per = ctx.cfg.generation.questions_per_chunk
    if per == 0:
        return [], {}
    plan = plan_difficulty(chunks, per, ctx)
    lines = {k: [f"difficulty: {d}" for d in v] for k, v in plan.items()}
    return slot_requests(QA, [(c.chunk_id, chunk_fields(c)) for c in chunks], ctx, lines), plan


def to_qa_pairs(
    chunks: Sequence[Chunk],
    answers: Mapping[str, QABatch],
    plan: Mapping[str, list[str]],
    splits: Mapping[str, Split],
    ctx: GenContext,
) -> list[QAPair]:
    out: list[QAPair] = []
    for c in chunks:
        batch = answers.get(c.chunk_id)
        if batch is None:
            continue
        for i, (item, difficulty) in enumerate(zip(batch.pairs, plan[c.chunk_id], strict=False)):
            question, answer = " ".join(item.question.split()), item.answer.strip()
            if not question or not answer:
                continue
            out.append(
                QAPair(
                    qa_id=f"{c.chunk_id}-qa{i}",
                    question=question,
                    answer=answer,
                    reasoning=item.reasoning.strip() or None,
                    difficulty=difficulty,
                    source_chunk=c.chunk_id,
                    doc_id=c.doc_id,
                    split=splits.get(c.doc_id, "train"),
                    teacher=ctx.teacher,
                )
            )
    return out


__all__ = ["plan_difficulty", "qa_requests", "to_qa_pairs"]
