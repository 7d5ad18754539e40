"""The false-negative guard's second opinion: a judge LLM asked whether a mined negative answers its query.

The embedding guard (`distiller.retrieval.mining`) drops near-copies; what it cannot see is a differently
worded passage that answers the query all the same. Those are most likely among the hard negatives that
the student ranks *above* the ground truth, and among those the ones scoring closest to (or above) it, so
the judge is asked about those first, up to `mining.judge_negatives_max` per iteration, under the mining
budget. A negative the judge says answers the query is dropped with every triplet that uses it for that
query; a check that failed or that the budget did not pay for keeps its triplet (the note says how many).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.generation.context import GenContext
from distiller.generation.runner import StageLLM
from distiller.generation.validation import judge_endpoint
from distiller.llm import LLMRequest
from distiller.prompts import quoted
from distiller.prompts.judge import JUDGE_NEGATIVE, NegativeCheck
from distiller.records import Triplet

STAGE = "mine"


@dataclass
class NegativeJudgement:
    kept: list[Triplet]
    checked: int = 0
    false_negatives: int = 0
    triplets_dropped: int = 0
    notes: list[str] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


def suspects(triplets: Sequence[Triplet], limit: int) -> list[Triplet]:
    """One triplet per (query, negative) among hard ones whose negative outranks the positive, the
    narrowest score gaps first."""
    seen: dict[tuple[str, str], Triplet] = {}
    for t in triplets:
        above = (
            t.negative_rank is not None and t.positive_rank is not None and t.negative_rank < t.positive_rank
        )
        if t.kind == "hard" and above:
            seen.setdefault((t.query_id, t.negative_id), t)

    def gap(t: Triplet) -> float:
        return (t.positive_score or 0.0) - (t.negative_score or 0.0)

    return sorted(seen.values(), key=lambda t: (gap(t), t.query_id, t.negative_id))[:limit]


def negative_request(t: Triplet, ctx: GenContext, stage: str = STAGE) -> LLMRequest:
    values = ctx.fields(question=t.query, source=quoted(t.negative))
    return JUDGE_NEGATIVE.request(f"{t.query_id}|{t.negative_id}", stage, values)


def judge_negatives(
    triplets: list[Triplet], cfg: DistillConfig, run_dir: Path, stage: str = STAGE
) -> NegativeJudgement:
    """`stage`: the ledger's name for the calls, the mine stage's own (`mine_iter2`), so each iteration's
    cost is its own; the budget caps them all as mining."""
    ask = suspects(triplets, cfg.mining.judge_negatives_max)
    if not ask:
        return NegativeJudgement(kept=triplets)
    ctx = GenContext.from_config(cfg)
    with StageLLM(cfg, run_dir, stage, judge_endpoint(cfg)) as llm:
        results = llm.run("false-negative check", [negative_request(t, ctx, stage) for t in ask])
        answers = llm.answers(results, NegativeCheck)
        details, cost = llm.details(), llm.cost_usd
        notes = list(llm.notes)
    false_neg = {tuple(item.split("|", 1)) for item, a in answers.items() if a.answers_query}
    kept = [t for t in triplets if (t.query_id, t.negative_id) not in false_neg]
    unanswered = len(ask) - len(answers)
    if unanswered:
        notes.append(f"{unanswered} of {len(ask)} negatives not judged (failed or over budget): kept")
    return NegativeJudgement(
        kept=kept,
        checked=len(answers),
        false_negatives=len(false_neg),
        triplets_dropped=len(triplets) - len(kept),
        notes=notes,
        llm=details,
        cost_usd=cost,
    )


__all__ = ["NegativeJudgement", "judge_negatives", "negative_request", "suspects"]
