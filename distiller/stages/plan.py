"""The stage order, written once: `stage_plan(cfg)` is what the in-process runner
(`distiller.pipeline.run_pipeline`), the `distill` flow (`flows/distill.py`) and a fusion domain's data
stages (`distiller.fusion.domains`) iterate.

labeled mode:   labeled                          → (mine → train) × iterations → evaluate → export → report
document mode:  ingest    → generate → validate  → ...
bootstrap mode: bootstrap → generate → validate  → ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distiller.config import DistillConfig

StageName = Literal[
    "ingest", "labeled", "bootstrap", "generate", "validate", "mine", "train", "evaluate", "export", "report"
]
DATA_STAGES: frozenset[StageName] = frozenset({"ingest", "labeled", "bootstrap", "generate", "validate"})
"""The stages that make the run's data (before any model is trained): what a fusion domain runs."""


@dataclass(frozen=True)
class Step:
    """One stage of a run: `stage` names its module in `distiller.stages` and its task in `tasks/`;
    `iteration` is set for mine and train."""

    stage: StageName
    iteration: int | None = None

    @property
    def args(self) -> tuple[int, ...]:
        """The arguments after (store, config) of the stage's function, and after config of its task."""
        return () if self.iteration is None else (self.iteration,)


def stage_plan(cfg: DistillConfig) -> list[Step]:
    """The stages a run of `cfg` goes through, in order."""
    from distiller.generation import bootstrap_mode

    steps: list[Step]
    if cfg.input.qa_file:  # labeled mode: the user's Q&A pairs stand in for ingest + generate
        steps = [Step("labeled")]
    else:  # bootstrap mode (a domain, no documents) writes its corpus; document mode reads one
        steps = [Step("bootstrap" if bootstrap_mode(cfg) else "ingest"), Step("generate"), Step("validate")]
    for k in range(1, cfg.mining.iterations + 1):
        steps += [Step("mine", k), Step("train", k)]
    return [*steps, Step("evaluate"), Step("export"), Step("report")]


def data_plan(cfg: DistillConfig) -> list[Step]:
    """The data stages of `stage_plan(cfg)`."""
    return [s for s in stage_plan(cfg) if s.stage in DATA_STAGES]


__all__ = ["DATA_STAGES", "StageName", "Step", "data_plan", "stage_plan"]
