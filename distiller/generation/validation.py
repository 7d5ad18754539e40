"""Validation: a judge model checks a sample of the generated rows against their sources.

What is judged: every Q&A pair against its source (the chunk, or in bootstrap mode the query's positive
document), and in document mode also each retrieval query against its chunk (`validation.judge_queries`).

The sample: `ceil(sample_rate x n)` rows of each kind, capped by what the validation budget can pay for
at the worst-case cost of a judge call, shared over the difficulty levels in proportion; within a level,
the rows whose seeded hashes come first, a source's first row before any source's second. Every row has
the same chance n/N, so the approval rate is an honest estimate of the whole set's, the sample spreads
over as many sources as its size allows, and, as a row's place depends on its own id only, the sample of
a set that grew keeps the rows judged before (their verdicts come from the call cache): a rerun after
new documents pays the judge for new rows, not for a reshuffled sample of old ones.

The outcome:
- `judgments.parquet`: one row per sampled item — verdict, the four checks, problems, the judge's
  analysis; failed and unsent calls are rows too (verdict failed / not_sent), never silently missing.
- `qa_pairs.parquet`: every pair, marked approved / rejected / unvalidated (the exporter never lets a
  rejected one out, and drops unvalidated ones under the `drop` policy).
- `queries.parquet`: rejected queries removed (a query whose positive does not answer it would teach the
  student the wrong thing); in bootstrap mode a query is rejected with its Q&A pair (the same row); under
  the `drop` policy unjudged queries are removed too (where queries are judged at all).
- The approval rate among judged rows with its 95% Wilson interval, per kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from distiller.config import DistillConfig, LLMConfig
from distiller.generation.context import GenContext
from distiller.generation.plan import stable_id
from distiller.generation.runner import StageLLM
from distiller.llm import LLMRequest, LLMResult
from distiller.llm.tokens import max_prompt_tokens, schema_json
from distiller.prompts import Prompt, quoted
from distiller.prompts.judge import JUDGE_QA, JUDGE_QUERY, Verdict
from distiller.records import Judgment, Passage, QAPair, Query

STAGE = "validate"
Kind = Literal["qa", "query"]
PROMPTS: dict[Kind, Prompt] = {"qa": JUDGE_QA, "query": JUDGE_QUERY}
LABEL: dict[Kind, str] = {"qa": "Q&A pairs", "query": "queries"}


class JudgeItem(BaseModel):
    item_id: str
    kind: Kind
    question: str
    answer: str | None = None
    source_id: str
    source: str
    group: str
    """What the sample spreads over: the source chunk (document mode) or concept (bootstrap mode)."""
    level: str
    """Difficulty (Q&A) or complexity (queries)."""

    @property
    def stratum(self) -> str:
        return f"{self.group} | {self.level}"


def judge_endpoint(cfg: DistillConfig) -> LLMConfig:
    return cfg.validation.judge or cfg.teacher


def qa_items(qa_pairs: Sequence[QAPair], passages: Mapping[str, Passage]) -> list[JudgeItem]:
    out = []
    for qa in qa_pairs:
        src = passages.get(qa.source_chunk or "")
        if src is not None:
            out.append(
                JudgeItem(
                    item_id=qa.qa_id,
                    kind="qa",
                    question=qa.question,
                    answer=qa.answer,
                    source_id=src.passage_id,
                    source=src.text,
                    group=src.chunk_id or src.doc_id,
                    level=qa.difficulty or "-",
                )
            )
    return out


def query_items(queries: Sequence[Query], passages: Mapping[str, Passage], skip: set[str]) -> list[JudgeItem]:
    """Queries not judged as a Q&A pair already (bootstrap mode: qa_id == query_id)."""
    out = []
    for q in queries:
        positives = [passages[p] for p in q.positive_ids if p in passages]
        if q.query_id in skip or not positives:
            continue
        out.append(
            JudgeItem(
                item_id=q.query_id,
                kind="query",
                question=q.text,
                source_id=positives[0].passage_id,
                source="\n\n".join(p.text for p in positives),
                group=q.chunk_id or q.doc_id,
                level=q.complexity or "-",
            )
        )
    return out


def stable_sample(items: Sequence[JudgeItem], n: int, seed: int) -> list[JudgeItem]:
    """n items, spread over difficulty levels in proportion and over sources, chosen by hashes of the
    items' own ids (see the module doc): the sample of a grown set keeps the old sample's rows."""
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []

    def rank(*parts: str) -> str:
        return stable_id(str(seed), *parts)

    by_level: dict[str, list[JudgeItem]] = {}
    for it in items:
        by_level.setdefault(it.level, []).append(it)
    # n shared over the levels in proportion to their rows (largest remainder)
    exact = {lv: n * len(v) / len(items) for lv, v in by_level.items()}
    take = {lv: math.floor(x) for lv, x in exact.items()}
    for lv in sorted(exact, key=lambda lv: (take[lv] - exact[lv], lv))[: n - sum(take.values())]:
        take[lv] += 1
    chosen: set[str] = set()
    for lv, rows in by_level.items():
        # A source's first row (in hash order) before any source's second: the sample spreads over as
        # many sources as its size allows; each level orders the sources by its own hash, so the levels
        # tend to pick different ones.
        nth: dict[str, int] = {}
        keyed = []
        for it in sorted(rows, key=lambda it: rank(it.item_id)):
            k = nth.get(it.group, 0)
            nth[it.group] = k + 1
            keyed.append(((k, rank(lv, it.group), rank(it.item_id)), it.item_id))
        chosen |= {item_id for _, item_id in sorted(keyed)[: take[lv]]}
    return [it for it in items if it.item_id in chosen]


def judge_request(item: JudgeItem, ctx: GenContext) -> LLMRequest:
    prompt = PROMPTS[item.kind]
    values = ctx.fields(question=item.question, answer=item.answer or "", source=quoted(item.source))
    return prompt.request(item.item_id, STAGE, values)


def affordable(llm: StageLLM, requests: Sequence[LLMRequest]) -> int | None:
    """How many judge calls the validation budget pays for at their mean worst-case cost (None: no cap)."""
    left = llm.budget_left()
    if left is None or not requests:
        return None
    pricing = llm.client.pricing
    if not pricing.known:
        return None  # the client refuses an unpriced model under a cap, with the fix in its message
    max_out = llm.client.config.max_tokens
    worst = [
        float(pricing.cost_usd(max_prompt_tokens(r.messages, schema_json(r.schema_model)), max_out))
        for r in requests
    ]
    mean = sum(worst) / len(worst)
    return None if mean <= 0 else int(left // mean)


def decide(v: Verdict) -> Literal["approved", "rejected"]:
    """Approved only when the verdict and all four checks agree: a judge that approves a pair it found
    ungrounded contradicts itself, and the doubt goes against the row."""
    ok = v.verdict == "approve" and v.grounded and v.no_hallucination and v.complete and v.factually_correct
    return "approved" if ok else "rejected"


def wilson(approved: int, judged: int) -> tuple[float, float]:
    from distiller.runview import wilson_interval  # the exporter's, so every report agrees

    return wilson_interval(approved, judged)


def approval_line(kind: Kind, approved: int, judged: int) -> str:
    if judged == 0:
        return f"{LABEL[kind]}: none judged"
    lo, hi = wilson(approved, judged)
    return (
        f"{LABEL[kind]} approval {100 * approved / judged:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%) "
        f"of {judged} judged"
    )


@dataclass
class ValidationResult:
    judgments: list[Judgment]
    qa_pairs: list[QAPair]
    queries: list[Query]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


def judgment(item: JudgeItem, res: LLMResult, judge: str) -> Judgment:
    base = {
        "judgment_id": stable_id(item.kind, item.item_id, PROMPTS[item.kind].id),
        "item_id": item.item_id,
        "item_kind": item.kind,
        "source_id": item.source_id,
        "stratum": item.stratum,
        "judge": judge,
        "prompt": PROMPTS[item.kind].id,
        "status": res.status,
        "cost_usd": res.cost_usd,
    }
    if res.ok and res.parsed is not None:
        v = Verdict.model_validate(res.parsed)
        return Judgment(
            **base,
            verdict=decide(v),
            grounded=v.grounded,
            no_hallucination=v.no_hallucination,
            complete=v.complete,
            factually_correct=v.factually_correct,
            problems=[p for p in v.problems if p.strip()],
            reasons=v.analysis.strip(),
        )
    verdict = "not_sent" if res.status == "budget" else "failed"
    return Judgment(**base, verdict=verdict, reasons=res.error or res.status)


def sample_sizes(pools: Mapping[Kind, int], rate: float, cap: int | None) -> dict[Kind, int]:
    """ceil(rate x N) per kind; under a cap, the cap shared in proportion (largest remainder)."""
    want = {k: math.ceil(rate * n) if rate > 0 else 0 for k, n in pools.items()}
    total = sum(want.values())
    if cap is None or total <= cap:
        return want
    exact = {k: cap * w / total for k, w in want.items()}
    got = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: got[k] - exact[k])[: cap - sum(got.values())]:
        got[k] += 1
    return got


class Sample(BaseModel):
    """The rows chosen for the judge, per kind (kept for a sharded stage: the flow that plans the shards
    and the stage that reads them judge the same rows)."""

    ids: dict[str, list[str]]
    cap: int | None = None
    note: str = ""

    @classmethod
    def kept(cls, path: Path | None) -> Sample | None:
        """The sample an earlier planner kept at `path`, if any."""
        if path is None or not path.is_file():
            return None
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def chosen(self, pools: Mapping[Kind, list[JudgeItem]]) -> dict[Kind, list[JudgeItem]]:
        """Each kind's sampled items, in pool order."""
        return {
            kind: [it for it in pool if it.item_id in set(self.ids.get(kind, []))]
            for kind, pool in pools.items()
        }


JudgeShards = Callable[[list[JudgeItem]], tuple[dict[tuple[str, str], Judgment], dict[str, Any]]]
"""Judges the sampled items in shards: their verdicts by (kind, item id), and the shards' info for
`StageLLM.absorb` (`distiller.generation.judge_shards`)."""


def pools_for(
    cfg: DistillConfig,
    qa_pairs: Sequence[QAPair],
    queries: Sequence[Query],
    passages: Sequence[Passage],
    bootstrap: bool,
) -> dict[Kind, list[JudgeItem]]:
    """The rows the judge may be asked about, per kind."""
    by_id = {p.passage_id: p for p in passages}
    pools: dict[Kind, list[JudgeItem]] = {"qa": qa_items(qa_pairs, by_id)}
    if not bootstrap and cfg.validation.judge_queries:
        pools["query"] = query_items(queries, by_id, skip={qa.qa_id for qa in qa_pairs})
    return pools


def choose_sample(
    cfg: DistillConfig,
    llm: StageLLM,
    pools: Mapping[Kind, list[JudgeItem]],
    kept: Path | None = None,
) -> Sample:
    """The sample: `sample_rate` of each kind, capped by what the budget pays for; read from `kept` when
    it was chosen before (and written there when not)."""
    if (sample := Sample.kept(kept)) is not None:
        return sample
    # Every row's request is priced: the cap is what the budget pays for at their mean worst case.
    ctx = GenContext.from_config(cfg)
    cap = affordable(llm, [judge_request(it, ctx) for pool in pools.values() for it in pool])
    sizes = sample_sizes({k: len(v) for k, v in pools.items()}, cfg.validation.sample_rate, cap)
    wanted = sample_sizes({k: len(v) for k, v in pools.items()}, cfg.validation.sample_rate, None)
    note = ""
    if sizes != wanted:
        note = (
            f"the validation budget (${llm.budget_left() or 0:.4f} left) pays for {sum(sizes.values())} "
            f"of the {sum(wanted.values())} judge calls the sample rate asks for"
        )
    ids = {
        kind: [it.item_id for it in stable_sample(pool, sizes[kind], cfg.seed)]
        for kind, pool in pools.items()
    }
    sample = Sample(ids=ids, cap=cap, note=note)
    if kept is not None:
        from distiller.store import atomic_write_text

        atomic_write_text(kept, sample.model_dump_json())
    return sample


def validate(
    cfg: DistillConfig,
    run_dir: Path,
    qa_pairs: Sequence[QAPair],
    queries: Sequence[Query],
    passages: Sequence[Passage],
    bootstrap: bool,
    *,
    kept_sample: Path | None = None,
    shards: JudgeShards | None = None,
) -> ValidationResult:
    """`kept_sample`: where the sample is kept (see `choose_sample`); `shards`: judge the sample in
    shards (else one batch per kind, here)."""
    ctx = GenContext.from_config(cfg)
    endpoint = judge_endpoint(cfg)
    judge = f"{endpoint.provider}:{endpoint.model}"
    pools = pools_for(cfg, qa_pairs, queries, passages, bootstrap)
    notes: list[str] = []
    with StageLLM(cfg, run_dir, STAGE, endpoint) as llm:
        sample = choose_sample(cfg, llm, pools, kept_sample)
        cap = sample.cap
        if sample.note:
            notes.append(sample.note)
        chosen = sample.chosen(pools)
        judgments: list[Judgment] = []
        shard_counts: dict[str, Any] = {}
        if shards is not None:
            by_item, info = shards([it for items in chosen.values() for it in items])
            llm.absorb(info)
            shard_counts = info.get("shards", {})
            for items in chosen.values():
                for it in items:
                    unjudged = LLMResult(
                        item_id=it.item_id,
                        stage=STAGE,
                        status="budget",
                        error="not judged: its shard did not finish",
                    )
                    judgments.append(by_item.get((it.kind, it.item_id)) or judgment(it, unjudged, judge))
        else:
            for kind in pools:
                sample_rows = chosen[kind]
                results = llm.run(f"judge {LABEL[kind]}", [judge_request(it, ctx) for it in sample_rows])
                judgments += [judgment(it, res, judge) for it, res in zip(sample_rows, results, strict=True)]
        notes += llm.notes
        details_llm = {**llm.details(), **shard_counts}
        cost = llm.cost_usd
    verdicts = {j.item_id: j.verdict for j in judgments if j.verdict in ("approved", "rejected")}
    policy = cfg.validation.unvalidated_policy
    new_qa = [qa.model_copy(update={"validation": verdicts.get(qa.qa_id, "unvalidated")}) for qa in qa_pairs]
    # The drop policy reaches queries only where queries are judged (bootstrap mode: as their Q&A pair).
    queries_judged = bootstrap or "query" in pools
    kept_queries = [
        q
        for q in queries
        if verdicts.get(q.query_id) != "rejected"
        and (policy == "keep" or not queries_judged or q.query_id in verdicts)
    ]
    lines, figures = [], {}
    for kind, pool in pools.items():
        mine = [j for j in judgments if j.item_kind == kind]
        approved = sum(j.verdict == "approved" for j in mine)
        judged = approved + sum(j.verdict == "rejected" for j in mine)
        lo, hi = wilson(approved, judged)
        figures[kind] = {
            "rows": len(pool),
            "sampled": len(mine),
            "judged": judged,
            "approved": approved,
            "rate": approved / judged if judged else None,
            "ci95": [lo, hi] if judged else None,
        }
        lines.append(approval_line(kind, approved, judged))
    unvalidated = sum(qa.validation == "unvalidated" for qa in new_qa)
    lines.append(
        f"{unvalidated} of {len(new_qa)} Q&A pairs unvalidated ({'kept' if policy == 'keep' else 'dropped'})"
    )
    if len(kept_queries) < len(queries):
        lines.append(f"{len(queries) - len(kept_queries)} of {len(queries)} queries removed")
    return ValidationResult(
        judgments=judgments,
        qa_pairs=new_qa,
        queries=kept_queries,
        message="; ".join(lines + notes),
        details={
            "judge": judge,
            "prompts": {k: PROMPTS[k].id for k in pools},
            "sample_rate": cfg.validation.sample_rate,
            "budget_cap_calls": cap,
            "approval": figures,
            "unvalidated_policy": policy,
            "queries_removed": len(queries) - len(kept_queries),
            **details_llm,
        },
        cost_usd=cost,
    )


__all__ = [
    "JudgeItem",
    "JudgeShards",
    "Sample",
    "ValidationResult",
    "affordable",
    "approval_line",
    "choose_sample",
    "decide",
    "judge_endpoint",
    "judgment",
    "pools_for",
    "qa_items",
    "query_items",
    "sample_sizes",
    "stable_sample",
    "validate",
]
