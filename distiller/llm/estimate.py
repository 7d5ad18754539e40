"""What a run will cost before anything is spent (`distill estimate`).

`estimate_cost(plan, llm, budget)` takes either the planned requests themselves (exact prompts; those
already in the call cache cost nothing) or counts per stage (`{"generate": 1200}` or `StagePlan`s with
an average prompt size), and returns per stage: calls, prompt tokens, max output tokens, an expected
cost and the worst case the budget will reserve. `render_estimate()` makes it a rich table.

Token counts are approximate (no provider tokenizer works offline here; see tokens.py) and the result
says so in `token_method`. Output tokens are unknowable in advance, so they are calibrated: per prompt
type (the answer's schema), the mean output of the answers already in the call cache (this model's when
it has `MIN_CALIBRATION` of them, else any model's); a type with none falls back to a typical share of
`max_tokens` (`TYPICAL_OUTPUT_FRACTION`). `output_assumption` says which applied. The worst case assumes
all of `max_tokens`, which is what the budget reserves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from pydantic import BaseModel, Field
from rich.table import Table

from distiller.config import BudgetConfig, LLMConfig
from distiller.llm.budget import budget_field
from distiller.llm.cache import CallCache
from distiller.llm.client import request_key
from distiller.llm.pricing import Pricing
from distiller.llm.tokens import METHOD_APPROX, expected_prompt_tokens, max_prompt_tokens, schema_json
from distiller.llm.types import LLMRequest

MIN_CALIBRATION = 3
"""Cached answers of a prompt type needed before their mean output replaces the typical share."""
DEFAULT_OUTPUT_FRACTION = 0.15
TYPICAL_OUTPUT_FRACTION: dict[str, float] = {
    # Share of max_tokens (1024 by default) a structured answer of this type typically uses: short JSON
    # objects. Set from the scripted teacher of the tests (about 60 tokens for a query, 150 for two Q&A
    # pairs, 45 for a verdict); only used until the cache has answers of the type to calibrate from.
    "QueryBatch": 0.07,
    "QABatch": 0.15,
    "Verdict": 0.05,
    "NegativeCheck": 0.03,
    "NegativeSet": 0.25,
    "DocumentSet": 0.35,
}
EXPECTED_REQUEST_OVERHEAD = {"openai": 8, "anthropic": 346}
"""Prompt tokens a request adds to its messages: reply priming (OpenAI), the tool-use system prompt
(Anthropic documents 313-346). The budget's bound (tokens.py) allows more."""

DEFAULT_PROMPT_CHARS = 2000
"""A count-only plan's assumed prompt: a ~200-token chunk plus instructions and the schema."""


class StagePlan(BaseModel):
    stage: str
    calls: int = Field(ge=0)
    prompt_chars: int = Field(default=DEFAULT_PROMPT_CHARS, ge=0, description="Average prompt size.")
    messages_per_call: int = Field(default=2, ge=1)
    max_output_tokens: int | None = Field(
        default=None, ge=1, description="Default: the endpoint's max_tokens."
    )


class StageEstimate(BaseModel):
    stage: str
    model: str
    calls: int
    cached: int = Field(description="Planned requests already answered in the call cache (cost 0).")
    input_tokens: int
    max_output_tokens: int
    expected_output_tokens: int
    expected_cost_usd: float | None = Field(description="None: the model has no known price.")
    worst_case_usd: float | None = Field(description="What the budget reserves: prompt bound + max output.")
    budget_usd: float | None = Field(description="The tightest cap that applies to this stage (None: none).")
    within_budget: bool | None
    price_source: str


class CostEstimate(BaseModel):
    stages: list[StageEstimate]
    run_budget_usd: float | None
    token_method: str
    output_assumption: str
    notes: list[str] = Field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stages)

    @property
    def input_tokens(self) -> int:
        return sum(s.input_tokens for s in self.stages)

    @property
    def max_output_tokens(self) -> int:
        return sum(s.max_output_tokens for s in self.stages)

    @property
    def expected_cost_usd(self) -> float | None:
        costs = [s.expected_cost_usd for s in self.stages]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    @property
    def worst_case_usd(self) -> float | None:
        costs = [s.worst_case_usd for s in self.stages]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)


def _cap(budget: BudgetConfig | None, stage: str) -> float | None:
    if budget is None:
        return None
    field = budget_field(stage)
    caps = [c for c in (budget.run_usd, getattr(budget, field) if field else None) if c is not None]
    return min(caps) if caps else None


def estimate_cost(
    plan: Sequence[LLMRequest] | Sequence[StagePlan] | Mapping[str, int],
    llm: LLMConfig | Mapping[str, LLMConfig],
    budget: BudgetConfig | None = None,
    *,
    expected_output_fraction: float | None = None,
    cache: CallCache | None = None,
) -> CostEstimate:
    """Price a plan. `llm`: one endpoint for every stage, or stage -> endpoint (teacher, judge).
    `expected_output_fraction`: a fixed share of max_tokens instead of the calibration."""
    if expected_output_fraction is not None and not 0.0 <= expected_output_fraction <= 1.0:
        raise ValueError("expected_output_fraction must be within [0, 1]")
    calibrated: dict[str, int] = {}
    typical: set[str] = set()
    stats_by_model: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}

    def expected_out(cfg: LLMConfig, schema: str, max_out: int) -> float:
        if expected_output_fraction is not None:
            return max_out * expected_output_fraction
        if cache is not None:
            key = (cfg.provider, cfg.model)
            if key not in stats_by_model:
                own = cache.output_stats(cfg.provider, cfg.model)
                anyone = cache.output_stats()
                stats_by_model[key] = {**anyone, **{k: v for k, v in own.items() if v[0] >= MIN_CALIBRATION}}
            n, mean = stats_by_model[key].get(schema, (0, 0.0))
            if n >= MIN_CALIBRATION:
                calibrated[schema] = n
                return min(float(max_out), mean)
        typical.add(schema)
        return max_out * TYPICAL_OUTPUT_FRACTION.get(schema, DEFAULT_OUTPUT_FRACTION)

    notes: list[str] = []
    stages: dict[str, dict[str, int]] = {}
    order: list[str] = []

    def endpoint(stage: str) -> LLMConfig:
        if isinstance(llm, LLMConfig):
            return llm
        if stage not in llm:
            raise KeyError(f"no LLM endpoint given for stage {stage!r} (have: {', '.join(llm)})")
        return llm[stage]

    def acc(stage: str) -> dict[str, int]:
        if stage not in stages:
            order.append(stage)
            stages[stage] = {"calls": 0, "cached": 0, "in": 0, "in_max": 0, "out": 0, "exp_out": 0}
        return stages[stage]

    items: list[LLMRequest | StagePlan]
    if isinstance(plan, Mapping):
        items = [StagePlan(stage=s, calls=n) for s, n in plan.items()]
        notes.append(f"prompt size assumed: {DEFAULT_PROMPT_CHARS} characters per call")
    else:
        items = list(plan)
    if any(isinstance(i, StagePlan) for i in items):
        notes.append("worst case of counted stages assumes 1 byte per character (ASCII-like text)")

    for item in items:
        cfg = endpoint(item.stage)
        a = acc(item.stage)
        if isinstance(item, StagePlan):
            n = item.calls
            max_out = item.max_output_tokens or cfg.max_tokens
            overhead = item.messages_per_call
            approx = -(-item.prompt_chars // 4)
            a["calls"] += n
            a["in"] += n * (approx + overhead * 8 + 128)
            # The bound counts bytes: 1 per character for ASCII-like text (said in the notes).
            a["in_max"] += n * (item.prompt_chars + overhead * 8 + 512)
            a["out"] += n * max_out
            a["exp_out"] += round(n * expected_out(cfg, "", max_out))
            continue
        max_out = item.max_tokens or cfg.max_tokens
        if cache is not None and cache.contains([request_key(cfg, item)]):
            a["cached"] += 1
            continue
        text = schema_json(item.schema_model)
        a["calls"] += 1
        a["in"] += (
            expected_prompt_tokens(item.messages, text)
            + EXPECTED_REQUEST_OVERHEAD.get(cfg.provider, 0)
            - expected_prompt_tokens([], "")
        )
        a["in_max"] += max_prompt_tokens(item.messages, text)
        a["out"] += max_out
        a["exp_out"] += round(expected_out(cfg, item.schema_model.__name__, max_out))

    out: list[StageEstimate] = []
    for stage in order:
        a, cfg = stages[stage], endpoint(stage)
        if cfg.offline:
            notes.append(f"stage {stage!r}: offline teacher, no LLM calls")
            a = {"calls": 0, "cached": a["cached"], "in": 0, "in_max": 0, "out": 0, "exp_out": 0}
        pricing = Pricing(cfg)
        exp_out = a["exp_out"]
        expected = worst = None
        if cfg.offline:
            expected = worst = 0.0
        elif pricing.known:
            batch = cfg.mode == "batch"  # the batch APIs bill half price
            expected = float(_price(pricing, a["in"], exp_out, a["calls"], batch=batch))
            worst = float(_price(pricing, a["in_max"], a["out"], a["calls"], batch=batch))
        else:
            notes.append(f"stage {stage!r}: {pricing.unknown_message()}")
        cap = _cap(budget, stage)
        out.append(
            StageEstimate(
                stage=stage,
                model="offline" if cfg.offline else f"{cfg.provider}/{cfg.model}",
                calls=a["calls"],
                cached=a["cached"],
                input_tokens=a["in"],
                max_output_tokens=a["out"],
                expected_output_tokens=exp_out,
                expected_cost_usd=expected,
                worst_case_usd=worst,
                budget_usd=cap,
                within_budget=None if expected is None or cap is None else expected <= cap,
                price_source="offline"
                if cfg.offline
                else pricing.source + (" (batch price)" if cfg.mode == "batch" else ""),
            )
        )
    est = CostEstimate(
        stages=out,
        run_budget_usd=budget.run_usd if budget else None,
        token_method=METHOD_APPROX,
        output_assumption=_output_assumption(expected_output_fraction, calibrated, typical),
        notes=notes,
    )
    total = est.expected_cost_usd
    if budget is not None and total is not None and total > budget.run_usd:
        est.notes.append(
            f"the expected cost ${total:.4f} exceeds the run budget ${budget.run_usd:.4f}: the run will stop "
            "early and keep what it has"
        )
    return est


def _output_assumption(fraction: float | None, calibrated: dict[str, int], typical: set[str]) -> str:
    if fraction is not None:
        return f"answers use {fraction:.0%} of max_tokens on average"
    parts = []
    if calibrated:
        parts.append(
            "output calibrated from cached answers: "
            + ", ".join(f"{k} ({n} answers)" for k, n in sorted(calibrated.items()))
        )
    rest = sorted(typical - calibrated.keys())
    if rest:
        parts.append(
            "typical share of max_tokens (no cached answers yet): "
            + ", ".join(
                f"{k or 'counted'} {TYPICAL_OUTPUT_FRACTION.get(k, DEFAULT_OUTPUT_FRACTION):.0%}"
                for k in rest
            )
        )
    return "; ".join(parts) or "no calls to price"


def _price(
    pricing: Pricing, input_tokens: int, output_tokens: int, calls: int, *, batch: bool = False
) -> Decimal:
    """Priced as `calls` average calls, not one huge call: tiered prices (long-context surcharges)
    apply per request and a stage's total would wrongly reach them."""
    if calls == 0:
        return Decimal(0)
    return calls * pricing.cost_usd(-(-input_tokens // calls), -(-output_tokens // calls), batch=batch)


def _usd(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.4f}"


def render_estimate(est: CostEstimate, title: str = "Estimated LLM cost") -> Table:
    """A rich table: one row per stage, a total row, and the method and assumptions as its caption."""
    table = Table(title=title, caption="\n".join([est.token_method, est.output_assumption, *est.notes]))
    for name in ("Stage", "Model", "Calls", "Cached", "Input tok", "Max out tok", "Exp. out tok"):
        table.add_column(name, justify="left" if name in ("Stage", "Model") else "right")
    for name in ("Expected", "Worst case", "Budget"):
        table.add_column(name, justify="right")
    for s in est.stages:
        table.add_row(
            s.stage,
            s.model,
            f"{s.calls:,}",
            f"{s.cached:,}",
            f"{s.input_tokens:,}",
            f"{s.max_output_tokens:,}",
            f"{s.expected_output_tokens:,}",
            _usd(s.expected_cost_usd),
            _usd(s.worst_case_usd),
            "none"
            if s.budget_usd is None
            else f"${s.budget_usd:,.2f}" + (" (over)" if s.within_budget is False else ""),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        f"{est.calls:,}",
        f"{sum(s.cached for s in est.stages):,}",
        f"{est.input_tokens:,}",
        f"{est.max_output_tokens:,}",
        f"{sum(s.expected_output_tokens for s in est.stages):,}",
        _usd(est.expected_cost_usd),
        _usd(est.worst_case_usd),
        "none" if est.run_budget_usd is None else f"${est.run_budget_usd:,.2f}",
    )
    return table


__all__ = ["CostEstimate", "StageEstimate", "StagePlan", "estimate_cost", "render_estimate"]
