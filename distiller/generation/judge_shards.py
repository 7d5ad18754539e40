"""Validation in shards: the judge's sample in groups (`validation.items_per_shard`, the run's kept
`ShardGroups`), each group's verdicts written by one task into its own folder of the run,
`shards/validate/<key>/`, under a grant of the budget (`distiller.generation.grants`); the validate stage
merges them in the sample's order. The sample itself is chosen once per stage key and kept
(`shards/validate/sample-<key>.json`), so the flow that plans the shards and the stage that reads them
judge the same rows, whatever the budget has left in between.

A shard's key is what decides its verdicts: its items (question, answer, source), the judge's endpoint,
the prompts and templates, the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from distiller.config import DistillConfig
from distiller.generation.grants import GrantedDone, GrantedShard, Written, run_granted, this_pass
from distiller.generation.validation import LABEL, STAGE, JudgeItem, Kind, judge_endpoint
from distiller.records import Judgment, read_parquet
from distiller.store import Mirror

PARTS_DIR = "shards/validate"
STEPS = ("judge Q&A pairs", "judge queries")
VERSION = "1"


class JudgeShard(GrantedShard):
    """One group of sampled rows for the judge: all a worker needs."""

    items: list[JudgeItem]
    STAGE: ClassVar[str] = STAGE
    STEPS: ClassVar[tuple[str, ...]] = STEPS
    ROWS: ClassVar[str] = "items"
    VERSION: ClassVar[str] = VERSION

    @classmethod
    def row_text(cls, row: JudgeItem) -> str:
        return row.model_dump_json()

    @property
    def weight(self) -> int:
        return sum(len(it.question) + len(it.answer or "") + len(it.source) for it in self.items)


def settings(cfg: DistillConfig) -> str:
    """What in the config decides a shard's verdicts (not the sample's size, the shard size, the policy)."""
    from distiller.generation import stage_fingerprint
    from distiller.stages.keys import config_hash

    endpoint = judge_endpoint(cfg).model_dump_json(exclude={"api_key"})
    return (
        config_hash(cfg) + hashlib.sha256(endpoint.encode()).hexdigest() + stage_fingerprint(cfg, "validate")
    )


def plan_shards(
    cfg: DistillConfig, items: Sequence[JudgeItem], groups: list[list[int]], parts: Path, stage_key: str
) -> list[JudgeShard]:
    """Every shard of the sample (in its kept groups), done or not, without grants."""
    return JudgeShard.for_groups(cfg, items, groups, parts, settings(cfg), stage_key)


def judge_shard(spec: JudgeShard, *, remote: Mirror | None = None) -> GrantedDone:
    """Judge one shard's items into its folder (nothing if it is done already); `remote`: the mirror this
    machine's copy of the run reports to (`grants.run_granted`)."""
    from distiller.generation.context import GenContext
    from distiller.generation.validation import judge_request, judgment

    ctx = GenContext.from_config(spec.config)
    endpoint = judge_endpoint(spec.config)
    judge = f"{endpoint.provider}:{endpoint.model}"

    def work(llm: Any) -> tuple[Written, dict[str, int]]:
        judgments: list[Judgment] = []
        kinds: tuple[Kind, ...] = ("qa", "query")
        for kind in kinds:
            mine = [it for it in spec.items if it.kind == kind]
            results = llm.run(f"judge {LABEL[kind]}", [judge_request(it, ctx) for it in mine])
            judgments += [judgment(it, res, judge) for it, res in zip(mine, results, strict=True)]
        judged = sum(j.verdict in ("approved", "rejected") for j in judgments)
        return {"judgments.parquet": (judgments, Judgment)}, {"items": len(spec.items), "judged": judged}

    return run_granted(spec, work, endpoint, remote=remote)


def merged(specs: Sequence[JudgeShard]) -> tuple[dict[tuple[str, str], Judgment], dict[str, Any]]:
    """Every shard's verdicts by (kind, item id), and what the stage keeps of the shards
    (`grants.this_pass`)."""
    by_item: dict[tuple[str, str], Judgment] = {}
    for spec in specs:
        p = Path(spec.out) / "judgments.parquet"
        for j in read_parquet(p, Judgment) if p.is_file() else []:
            by_item[(j.item_kind, j.item_id)] = j
    return by_item, this_pass(specs, "judged")


__all__ = [
    "PARTS_DIR",
    "STEPS",
    "JudgeShard",
    "judge_shard",
    "merged",
    "plan_shards",
]
