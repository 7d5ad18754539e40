"""Key figures of one run (`distill status RUN`) and of all runs in a folder (`distill runs DIR`), as rich
renderables: the CLI prints them, tests render them to text.

Everything shown comes from the run folder; text from the run (messages, paths, model names) is put in
`rich.text.Text`, never parsed as markup, so a `[red]` inside a file name prints as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from distiller.records import (
    OFFLINE_WARNING,
    MetricRow,
    query_set_label,
    read_parquet,
    rows_by_set,
    selection_set,
)
from distiller.runview import RunView
from distiller.store import RunStore

STATUS_STYLE = {
    "completed": "green",
    "cached": "cyan",
    "failed": "bold red",
    "running": "yellow",
    "skipped": "dim",
    "pending": "dim",
}


def fmt_duration(seconds: float) -> str:
    """58.8s, 7m12s, 1h02m: how long, at a glance."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def stage_status_text(stage: dict[str, Any]) -> str:
    """'completed', or for a stage served from the cache 'cached; computed in 7m12s' (its real cost)."""
    status = str(stage.get("status", "?"))
    if status != "cached":
        return status
    text = f"cached; computed in {fmt_duration(RunView.compute_seconds_of(stage))}"
    cost = RunView.compute_cost_of(stage)
    return text + (f" for ${cost:.4f}" if cost else "")


class RunFigures(BaseModel):
    """The numbers `distill runs` shows for one run."""

    name: str
    path: str
    updated: str = ""
    state: str = "new"
    stages_done: int = 0
    stages_total: int = 0
    documents: int = 0
    chunks: int = 0
    queries: int = 0
    qa_pairs: int = 0
    approval_rate: float | None = None
    triplets: int = 0
    seconds: float = Field(default=0.0, description="Wall time of the stages as last run (cached: restore).")
    compute_seconds: float = Field(
        default=0.0, description="Time the results took to compute: cached stages at their first run's."
    )
    cost_usd: float = 0.0
    cached_cost_usd: float = Field(default=0.0, description="What the cached stages' calls cost when made.")
    best: str | None = None
    metric: str = "MRR@5"
    best_value: float | None = None
    base_value: float | None = None
    measured_on: str | None = Field(default=None, description="What the metric was measured on, in words.")
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


def _state(stages: dict[str, dict[str, Any]]) -> str:
    states = {s.get("status") for s in stages.values()}
    if not states:
        return "new"
    for s in ("failed", "running"):
        if s in states:
            return s
    return "done"


def run_figures(run_dir: Path | str) -> RunFigures:
    """One run's key figures, read from its manifest and artifacts (Parquet footers where possible)."""
    run_dir = Path(run_dir)
    try:
        return _figures(RunView(run_dir))
    except (OSError, ValueError) as e:  # one broken run folder is shown as such, not raised
        return RunFigures(
            name=run_dir.name, path=str(run_dir), state="unreadable", error=f"{type(e).__name__}: {e}"
        )


def _figures(view: RunView) -> RunFigures:
    stages = view.stages
    metric = str(view.config_get("evaluation.metric", "MRR@5"))
    chosen = selection_set(view.metrics)
    values = {m.model: m.value for m in view.metrics if m.metric == metric and m.query_set == chosen}
    best = view.best_model()
    appr = view.approval()
    return RunFigures(
        name=view.name,
        path=str(view.dir),
        updated=str(view.manifest.get("updated_at", "")),
        state=_state(stages),
        stages_done=sum(s.get("status") in ("completed", "cached") for s in stages.values()),
        stages_total=len(stages),
        documents=len({c.doc_id for c in view.chunks}),
        chunks=len(view.chunks),
        queries=len(view.queries),
        qa_pairs=len(view.qa_pairs),
        approval_rate=appr["rate"],
        triplets=len(view.triplets),
        seconds=view.total_seconds,
        compute_seconds=view.compute_seconds,
        cost_usd=view.total_cost,
        cached_cost_usd=view.cached_cost,
        best=best,
        metric=metric,
        best_value=values.get(best) if best else None,
        base_value=values.get("base"),
        measured_on=query_set_label(chosen) if chosen else None,
        notes=[f"missing: {m}" for m in view.missing_optional()],
    )


def _metric_cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "–"
    if base is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({value - base:+.3f})"


def runs_table(runs_dir: Path | str) -> Table:
    """All runs in a folder (any subfolder with a manifest.json), newest update first."""
    runs_dir = Path(runs_dir)
    found = sorted(runs_dir.glob("*/manifest.json")) if runs_dir.is_dir() else []
    figures = sorted((run_figures(m.parent) for m in found), key=lambda f: f.updated, reverse=True)
    table = Table(title=f"Runs in {runs_dir} ({len(figures)})", caption="metric: best model (change vs base)")
    for col, justify in (
        ("run", "left"),
        ("updated", "left"),
        ("state", "left"),
        ("stages", "right"),
        ("chunks", "right"),
        ("queries", "right"),
        ("Q&A (approved)", "right"),
        ("triplets", "right"),
        ("time", "right"),
        ("cost $", "right"),
        ("best", "left"),
        ("metric", "right"),
        ("measured on", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        qa = f"{f.qa_pairs}" + (f" ({100 * f.approval_rate:.0f}%)" if f.approval_rate is not None else "")
        state_style = (
            "bold red" if f.state in ("failed", "unreadable") else "yellow" if f.state == "running" else ""
        )
        table.add_row(
            Text(f.name),
            Text(f.updated[:19]),
            Text(f.state, style=state_style),
            f"{f.stages_done}/{f.stages_total}",
            str(f.chunks),
            str(f.queries),
            qa,
            str(f.triplets),
            fmt_duration(f.compute_seconds)
            + (f" ({fmt_duration(f.seconds)} now)" if f.compute_seconds - f.seconds > 1 else ""),
            f"{f.cost_usd:.4f}" + (f" (+{f.cached_cost_usd:.4f} cached)" if f.cached_cost_usd else ""),
            Text(f.best or "–"),
            Text(
                f"{f.metric} {_metric_cell(f.best_value, f.base_value)}" if f.best_value is not None else "–"
            ),
            Text(f.measured_on or "–"),
        )
    broken = [f"{f.name}: {f.error}" for f in figures if f.error]
    if broken:
        table.caption = "\n".join([str(table.caption), *broken])
    return table


STAGE_COLUMNS = ("stage", "status", "outputs (rows)", "seconds", "cost USD", "note")
"""The stage table's columns: `distill status`, the report and the flow's summary artifact."""


@dataclass(frozen=True)
class StageRow:
    """One row of the stage table (`STAGE_COLUMNS`); `status` is the bare status, for styling."""

    stage: str
    status: str
    status_text: str
    outputs: str
    seconds: float
    cost_usd: float
    note: str

    def cells(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.stage,
            self.status_text,
            self.outputs,
            f"{self.seconds:.1f}",
            f"{self.cost_usd:.4f}",
            self.note,
        )


def stage_rows(view: RunView) -> list[StageRow]:
    """The run's stages in run order, with their cost from the ledger (the rows add up to its total), then
    any stage the ledger charged that the manifest does not record."""
    costs = view.stage_costs
    rows = [
        StageRow(
            stage=name,
            status=str(s.get("status", "?")),
            status_text=stage_status_text(s),
            outputs=", ".join(f"{k} ({v})" if v >= 0 else k for k, v in (s.get("outputs") or {}).items()),
            seconds=float(s.get("seconds") or 0.0),
            cost_usd=costs.get(name, 0.0),
            note=s.get("message") or "",
        )
        for name, s in view.stages.items()
    ]
    for name in costs.keys() - view.stages.keys():
        rows.append(StageRow(name, "", "", "", 0.0, costs[name], "spend in the ledger, stage not recorded"))
    return rows


def _stages_table(view: RunView) -> Table:
    t = Table(title=f"Run {view.name}: stages")
    for col in STAGE_COLUMNS:
        justify = "right" if col in ("seconds", "cost USD") else "left"
        t.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in stage_rows(view):
        stage, status, outs, secs, cost, note = r.cells()
        if not r.status:  # spend the manifest does not record
            t.add_row(Text(stage), "", "", "", cost, Text(note))
            continue
        t.add_row(
            Text(stage),
            Text(status, style=STATUS_STYLE.get(r.status, "")),
            Text(outs),
            secs,
            cost,
            Text(note),
        )
    t.add_section()
    computed = view.compute_seconds
    note = (
        f"computed in {fmt_duration(computed)}"
        + (f" (cached stages' calls cost ${view.cached_cost:.4f} when made)" if view.cached_cost else "")
        if computed - view.total_seconds > 1
        else ""
    )
    t.add_row("total", "", "", f"{view.total_seconds:.1f}", f"{view.total_cost:.4f}", Text(note))
    return t


def _metrics_tables(view: RunView) -> list[RenderableType]:
    """One table per query set (the selection set first), each titled with what it was measured on."""
    if not view.metrics:
        return []
    from distiller.modelcard import ordered_metrics

    best = view.best_model()
    chosen = selection_set(view.metrics)
    out: list[RenderableType] = []
    for qs, rows in rows_by_set(view.metrics).items():
        metrics = ordered_metrics(m.metric for m in rows)
        models = sorted({m.model for m in rows}, key=lambda m: (m != "bm25", m != "base", m))
        value = {(m.model, m.metric): m.value for m in rows}
        n = max(m.n_queries for m in rows)
        # the label as a line of its own: as a table title rich would wrap it to the table's width
        out.append(Text(f"Retrieval on {n} queries: {query_set_label(qs)} (change vs base)", style="italic"))
        t = Table()
        t.add_column("model")
        for k in metrics:
            t.add_column(k, justify="right")
        for model in models:
            cells = [
                _metric_cell(value.get((model, k)), None if model == "base" else value.get(("base", k)))
                for k in metrics
            ]
            star = qs == chosen and model == best
            t.add_row(Text(model + (" ★ best" if star else ""), style="bold" if star else ""), *cells)
        out.append(t)
        if qs == chosen and best == "base":
            out.append(
                Text("models/best is the base model: no trained iteration beat it on this set.", style="bold")
            )
        if qs == "inverse-cloze":
            out.append(Text(f"warning: {OFFLINE_WARNING}", style="yellow"))
    return out


def _figures_line(view: RunView) -> Text:
    appr = view.approval()
    parts = [
        f"teacher {view.teacher}",
        f"judge {view.judge}",
        # Bootstrap and labeled runs have no chunks: their corpus is the passages written or given.
        f"{len(view.chunks)} chunks" if view.chunks else f"{len(view.passages)} passages",
        f"{len(view.queries)} queries",
        f"{len(view.qa_pairs)} Q&A pairs",
    ]
    if appr["rate"] is not None:
        parts.append(
            f"approval {100 * appr['rate']:.1f}% (95% CI {100 * appr['low']:.0f}–{100 * appr['high']:.0f}%)"
        )
    parts.append(f"{len(view.triplets)} triplets")
    return Text(" · ".join(parts))


def spend_line(view: RunView) -> str:
    """LLM spend from the ledger against the budget, and the estimate of what was sent against the bill
    (the stages keep both per step in the manifest); '' for a run with no ledger."""
    if view.ledger is None:
        return ""
    total = view.total_cost
    budget = view.config_get("budget.run_usd")
    parts = [f"LLM spend (ledger) ${total:.4f}" + (f" of budget ${budget:.4f}" if budget is not None else "")]
    ledger = view.ledger
    if "estimated" in ledger:
        unknown = float(ledger.loc[ledger["estimated"].fillna(False).astype(bool), "cost_usd"].sum())
        if unknown:
            n = int(ledger["estimated"].fillna(False).astype(bool).sum())
            parts.append(f"${unknown:.4f} of it for {n} calls of unknown outcome, charged at reservation")
    est = billed = 0.0
    for s in view.stages.values():
        d = s.get("details") or {}
        if "estimated_usd" in d and s.get("status") == "completed":
            est += float(d["estimated_usd"])
            billed += float(d.get("billed_usd") or 0.0)
    if est > 0:
        off = billed / est - 1
        parts.append(f"estimate of the calls sent ${est:.4f} vs billed ${billed:.4f} ({off:+.0%})")
    before = (view.manifest.get("llm_cost") or {}).get("estimate_before_run_usd")
    if before:
        parts.append(f"estimated before the run ${before:.4f}")
    return "; ".join(parts)


def status_renderable(run_dir: Path | str) -> RenderableType:
    """One run at a glance: key figures, stages (status, rows, time, cost), metrics, skipped inputs."""
    view = RunView(run_dir)
    parts: list[RenderableType] = [_figures_line(view), _stages_table(view)]
    spend = spend_line(view)
    if spend:
        parts.append(Text(spend))
    parts += _metrics_tables(view)
    skipped = view.manifest.get("skipped_inputs") or []
    if skipped:
        st = Table(title=f"Skipped inputs ({len(skipped)})", title_style="yellow")
        st.add_column("file", overflow="fold")
        st.add_column("why", overflow="fold")
        for s in skipped:
            st.add_row(
                Text(f"{s.get('path')}{':' + str(s['line']) if s.get('line') else ''}"),
                Text(str(s.get("reason"))),
            )
        parts.append(st)
    for m in view.missing_optional():
        parts.append(Text(f"missing: {m}", style="dim"))
    extras = [p for p in ("models/best", "exports", "report.html") if view.path(p).exists()]
    parts.append(Text(f"Run folder: {view.dir}" + (f"  ({', '.join(extras)})" if extras else "")))
    return Group(*parts)


def summary_markdown(store: RunStore) -> str:
    """The run at a glance, as Markdown (the flow's final Prefect artifact)."""
    lines = [
        f"# Run `{store.name}`",
        "",
        "| " + " | ".join(STAGE_COLUMNS) + " |",
        "|---" * len(STAGE_COLUMNS) + "|",
    ]
    for row in stage_rows(RunView(store.dir)):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |")
    cost = store.manifest().get("llm_cost")
    if cost:  # the ledger's figures (store.record_stage), the same as `distill status` and the report
        by = ", ".join(f"{k} ${v:.4f}" for k, v in cost["by_stage"].items())
        lines += ["", f"LLM cost (ledger): ${cost['total_usd']:.4f} ({by})"]
    metrics = store.path("metrics.parquet")
    if metrics.is_file():
        from distiller.modelcard import ordered_metrics

        for qs, rows in rows_by_set(read_parquet(metrics, MetricRow)).items():
            names = ordered_metrics(r.metric for r in rows)  # MRR@1, @5, @10, Recall@..., nDCG@10
            value = {(r.model, r.metric): r.value for r in rows}
            lines += ["", f"## Retrieval metrics on {query_set_label(qs)} ({rows[0].n_queries} queries)", ""]
            if qs == "inverse-cloze":
                lines += [f"> {OFFLINE_WARNING}", ""]
            lines.append("| model | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for m in dict.fromkeys(r.model for r in rows):
                lines.append(
                    f"| {m} | " + " | ".join(f"{value.get((m, k), float('nan')):.4f}" for k in names) + " |"
                )
    skipped = store.manifest().get("skipped_inputs", [])
    if skipped:
        lines += ["", f"## Skipped inputs ({len(skipped)})", ""]
        lines += [
            f"- `{s['path']}{':' + str(s['line']) if s.get('line') else ''}`: {s['reason']}" for s in skipped
        ]
    return "\n".join(lines)


def runs_json(runs_dir: Path | str) -> str:
    """The same figures as `runs_table`, as JSON (for scripts: `distill runs --json`)."""
    runs_dir = Path(runs_dir)
    found = sorted(runs_dir.glob("*/manifest.json")) if runs_dir.is_dir() else []
    return json.dumps([run_figures(m.parent).model_dump() for m in found], indent=2)


def status_json(run_dir: Path | str) -> str:
    """`distill status --json`: the run's figures, its stages as the manifest has them (with the compute
    time of cached ones) and its metric rows (every column, e.g. a query_set label)."""
    view = RunView(run_dir)
    stages = {
        name: {
            **s,
            "compute_seconds": RunView.compute_seconds_of(s),
            "compute_cost_usd": RunView.compute_cost_of(s),
        }
        for name, s in view.stages.items()
    }
    frame = view.frame("metrics.parquet")
    metrics = [] if frame is None else frame.to_dict("records")
    return json.dumps(
        {"figures": run_figures(run_dir).model_dump(), "stages": stages, "metrics": metrics},
        indent=2,
        default=str,
    )


__all__ = ["RunFigures", "run_figures", "runs_json", "runs_table", "status_json", "status_renderable"]
