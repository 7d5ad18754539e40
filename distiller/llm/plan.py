"""A budget that plans: the run's budget split over its LLM steps (queries, Q&A pairs, negatives, the
judge, the mining judge) in proportion to what the estimate says each costs, so a tight budget buys a
share of every step instead of all of the first and none of the rest.

The plan is made before anything is sent (`distill run` prints `coverage()`: what the budget buys and
what would buy all of it; `budget.policy: strict` refuses a budget that does not cover the estimate),
kept in the manifest (`budget_plan`), and read by each step as it starts: its share is the budget left
times its expected cost over the expected cost of the steps not yet run, so what an earlier step did not
spend passes on to the later ones. A budget that covers the estimate puts no cap on any step but the
budget itself.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, Field

from distiller.llm.budget import base_stage

ESTIMATE_MARGIN = 1.25
"""`coverage()` suggests the estimate plus this margin (the estimate aims at +-25% of the bill)."""


def step_key(stage: str, step: str) -> str:
    """The same step, named by the plan or by the stage that runs it ('concepts round 2' = 'concepts
    (first round...)', 'negatives' = 'contrastive negatives', 'mine_iter2' = 'mine')."""
    name = step.split(" (")[0].strip().lower()
    name = re.sub(r"^contrastive ", "", name)
    name = re.sub(r"^concepts round \d+$", "concepts", name)
    return f"{base_stage(stage)}:{name}"


class PlannedStep(BaseModel):
    stage: str
    step: str
    requests: int = Field(description="Requests the step will make (those already in the call cache too).")
    to_send: int = Field(description="Requests not in the call cache: the ones that cost money.")
    expected_usd: float


class BudgetPlan(BaseModel):
    steps: list[PlannedStep]
    budget_usd: float | None = Field(description="The run's budget (None: no cap).")
    spent_usd: float = Field(default=0.0, description="Already spent when planned (a resumed run).")
    policy: str = "partial"

    @property
    def expected_usd(self) -> float:
        return sum(s.expected_usd for s in self.steps)

    @property
    def left_usd(self) -> float | None:
        return None if self.budget_usd is None else max(0.0, self.budget_usd - self.spent_usd)

    @property
    def covered(self) -> bool:
        left = self.left_usd
        return left is None or self.expected_usd <= left

    def _index(self, stage: str, step: str) -> int | None:
        key = step_key(stage, step)
        return next((i for i, s in enumerate(self.steps) if step_key(s.stage, s.step) == key), None)

    def share_usd(self, stage: str, step: str, left_usd: float | None) -> float | None:
        """This step's cap given what the budget has left now; None: no cap beyond the budget (it covers
        the rest of the plan, or the step is not in the plan)."""
        i = self._index(stage, step)
        if i is None or left_usd is None:
            return None
        rest = sum(s.expected_usd for s in self.steps[i:])
        if rest <= left_usd or rest <= 0:
            return None
        return left_usd * self.steps[i].expected_usd / rest

    def stage_share_usd(self, stage: str, left_usd: float | None) -> float | None:
        """The share of all of a stage's steps still to run (for a stage that sizes its own sample)."""
        idx = [i for i, s in enumerate(self.steps) if base_stage(s.stage) == base_stage(stage)]
        if not idx or left_usd is None:
            return None
        rest = sum(s.expected_usd for s in self.steps[idx[0] :])
        if rest <= left_usd or rest <= 0:
            return None
        return left_usd * sum(self.steps[i].expected_usd for i in idx) / rest

    def coverage(self) -> str:
        """What the budget buys, in one line."""
        left, total = self.left_usd, self.expected_usd
        sends = sum(s.to_send for s in self.steps)
        if left is None:
            return f"no budget cap: the estimate is ${total:.4f} for {sends} calls"
        head = f"budget ${self.budget_usd:.4f}" + (
            f" (${self.spent_usd:.4f} already spent)" if self.spent_usd else ""
        )
        if self.covered:
            return f"{head} covers the estimated ${total:.4f} of all {sends} calls planned"
        fraction = left / total if total else 0.0
        parts = []
        for s in self.steps:
            if s.to_send == 0:
                continue
            got = s.requests - s.to_send + math.floor(s.to_send * fraction)
            label = s.step.split(" (")[0]
            parts.append(f"~{got} of {s.requests} {label}" if got else f"none of the {s.requests} {label}")
        need = self.spent_usd + total * ESTIMATE_MARGIN
        return (
            f"{head} covers ~{fraction:.0%} of the estimated ${total:.4f}, split over every step: "
            + ", ".join(parts)
            + f"; raise it to about ${_round_up_cents(need):.2f} for all"
        )


def _round_up_cents(usd: float) -> float:
    return math.ceil(usd * 100) / 100


__all__ = ["ESTIMATE_MARGIN", "BudgetPlan", "PlannedStep", "step_key"]
