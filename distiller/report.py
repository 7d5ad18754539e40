"""`distill report RUN`: one self-contained HTML page about a run.

Self-contained means it opens with no network: plotly.js is inlined once, every figure is inline JSON, and
a Content-Security-Policy forbids the page from loading anything at all, so a stray external reference
would fail loudly (a console error, which the browser test catches) instead of silently working online only.
Every string that comes from the run (documents, LLM output, stage names) is HTML-escaped in tables and
in figure labels (plotly renders a subset of HTML in labels).
"""

from __future__ import annotations

import html
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pyarrow.parquet as pq
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from distiller.llm.budget import base_stage, budget_field
from distiller.records import query_set_label, rows_by_set, selection_set
from distiller.runview import RunView, wilson_interval
from distiller.store import atomic_write_text
from distiller.summary import STAGE_COLUMNS, fmt_duration, stage_rows

SAMPLE_ROWS = 5
SPLIT_COLORS = {"train": "#1c7ed6", "val": "#f59f00", "test": "#ae3ec9"}
STATUS_COLORS = {"approved": "#2f9e44", "unvalidated": "#adb5bd", "rejected": "#e03131"}
CELL_CHARS = 240
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)
CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1rem 2rem;color:#1f2933}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #d9e2ec;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
td,th{border:1px solid #d9e2ec;padding:.25rem .5rem;vertical-align:top;text-align:left}
th{background:#f0f4f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.cell{max-width:28rem;white-space:pre-wrap;word-break:break-word} .note{color:#52606d;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:.5rem;margin:1rem 0}
.kpi{background:#f0f4f8;border-radius:6px;padding:.5rem .75rem} .kpi b{display:block;font-size:1.3rem}
nav a{margin-right:.8rem} .plot{min-height:380px}
"""


def e(value: Any) -> str:
    """HTML-escape anything shown on the page."""
    return html.escape("" if value is None else str(value), quote=True)


def _label(value: Any) -> str:
    # Plotly draws a subset of HTML in labels (<b>, <a href>, <br>); escaped text is drawn literally.
    return html.escape(str(value), quote=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = _fmt(v)
            if len(text) > CELL_CHARS:
                text = text[:CELL_CHARS] + "…"
            cells.append(
                f"<td class='num'>{e(text)}</td>" if i in numeric else f"<td class='cell'>{e(text)}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_html(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 60, "b": 60}, height=400)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=_label(why), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=_label(title), xaxis={"visible": False}, yaxis={"visible": False})
    return fig


# --- figures ---------------------------------------------------------------------------------------------


def funnel_figure(view: RunView) -> go.Figure:
    appr = view.approval()
    kept_qa = appr["approved"] + (appr["unvalidated"] if view.unvalidated_policy == "keep" else 0)
    steps = [
        ("documents", len({c.doc_id for c in view.chunks})),
        ("chunks", len(view.chunks)),
        ("queries + Q&A generated", len(view.queries) + len(view.qa_pairs)),
        ("kept after validation", len(view.queries) + kept_qa),
        ("triplets mined", len(view.triplets)),
    ]
    fig = go.Figure(go.Funnel(y=[s for s, _ in steps], x=[n for _, n in steps], textinfo="value"))
    fig.update_layout(title="Rows through the pipeline")
    return fig


def cost_figure(view: RunView) -> go.Figure:
    spent: dict[str, float] = {}
    calls: dict[str, str] = {}
    ledger = view.ledger
    if ledger is not None and {"stage", "cost_usd"} <= set(ledger.columns):
        frame = ledger.assign(_stage=ledger["stage"].astype(str).map(base_stage))
        for stage, g in frame.groupby("_stage", sort=False):
            spent[str(stage)] = float(g["cost_usd"].fillna(0).sum())
            cached = int(g["cached"].fillna(False).astype(bool).sum()) if "cached" in g else 0
            calls[str(stage)] = f"{len(g)} calls, {cached} cached"
    else:
        for s, r in view.stages.items():
            spent[base_stage(s)] = spent.get(base_stage(s), 0.0) + float(r.get("cost_usd") or 0.0)
    if not any(spent.values()):
        why = "no ledger: offline teacher, no LLM spend" if ledger is None else "no LLM spend recorded"
        return _empty("Cost per stage against budget", why)
    stages = list(spent)
    budgets = [view.config_get(f"budget.{f}") if (f := budget_field(s)) else None for s in stages]
    run_budget = view.config_get("budget.run_usd")
    x = [_label(s) for s in [*stages, "total"]]
    fig = go.Figure()
    fig.add_bar(
        x=x,
        y=[*spent.values(), sum(spent.values())],
        name="spent (USD)",
        hovertext=[_label(calls.get(s, "")) for s in stages] + [""],
    )
    fig.add_bar(x=x, y=[*budgets, run_budget], name="budget (USD)", marker={"color": "rgba(0,0,0,0.15)"})
    fig.update_layout(title="Cost per stage against its budget", barmode="group", yaxis_title="USD")
    return fig


def approval_figure(view: RunView) -> go.Figure:
    by: dict[str, Counter[str]] = defaultdict(Counter)
    for qa in view.qa_pairs:
        for key in ("all", f"difficulty: {qa.difficulty or 'unknown'}", f"teacher: {qa.teacher}"):
            by[key][qa.validation] += 1
    groups = [(k, c) for k, c in by.items() if c["approved"] + c["rejected"] > 0]
    if not groups:
        why = "no Q&A pairs in this run" if not view.qa_pairs else "no Q&A pair was judged"
        return _empty("Approval rate", why)
    labels, rates, lows, highs, texts = [], [], [], [], []
    for key, c in groups:
        n = c["approved"] + c["rejected"]
        lo, hi = wilson_interval(c["approved"], n)
        rate = c["approved"] / n
        labels.append(_label(key))
        rates.append(100 * rate)
        lows.append(100 * (rate - lo))
        highs.append(100 * (hi - rate))
        texts.append(f"{c['approved']} of {n}")
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=rates,
            text=texts,
            textposition="inside",
            error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows},
        )
    )
    fig.update_layout(
        title="Approval rate among judged Q&A pairs (95% Wilson interval)",
        yaxis_title="%",
        yaxis_range=[0, 105],
    )
    return fig


def mix_figure(view: RunView) -> go.Figure:
    if not view.qa_pairs and not view.queries:
        return _empty("Difficulty and query-type mix", "no queries or Q&A pairs in this run")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Q&A difficulty by validation", "Query type by split")
    )
    difficulty: dict[str, Counter[str]] = defaultdict(Counter)
    for qa in view.qa_pairs:
        difficulty[qa.validation][qa.difficulty or "unknown"] += 1
    for status, color in STATUS_COLORS.items():
        if difficulty[status]:
            keys = sorted(difficulty[status])
            fig.add_bar(
                x=[_label(k) for k in keys],
                y=[difficulty[status][k] for k in keys],
                name=status,
                marker_color=color,
                row=1,
                col=1,
            )
    types: dict[str, Counter[str]] = defaultdict(Counter)
    for q in view.queries:
        types[q.split][q.query_type or "unknown"] += 1
    for split, color in SPLIT_COLORS.items():
        if types[split]:
            keys = sorted(types[split])
            fig.add_bar(
                x=[_label(k) for k in keys],
                y=[types[split][k] for k in keys],
                name=f"queries: {split}",
                marker_color=color,
                row=1,
                col=2,
            )
    fig.update_layout(title="Difficulty and query-type mix", barmode="stack")
    return fig


def scores_figure(view: RunView) -> go.Figure:
    rows = [t for t in view.triplets if t.positive_score is not None or t.negative_score is not None]
    if not rows:
        return _empty("Scores of positives and mined negatives", "no scored triplets in this run")
    fig = go.Figure()
    for name, attr in (("positive", "positive_score"), ("mined negative", "negative_score")):
        pts = [(f"iter {t.iteration}", getattr(t, attr)) for t in rows if getattr(t, attr) is not None]
        fig.add_trace(go.Box(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name, boxmean=True))
    fig.update_layout(
        title="Student scores of positives vs mined negatives, per iteration",
        boxmode="group",
        yaxis_title="similarity",
    )
    return fig


def metrics_figure(view: RunView) -> go.Figure:
    if not view.metrics:
        return _empty("Retrieval metrics", "no metrics.parquet in this run")
    by_set = rows_by_set(view.metrics)
    models = sorted({m.model for m in view.metrics}, key=lambda m: (m != "bm25", m != "base", m))
    # one group of bars per (query set, metric); the set is named on the axis when there are several
    cols = [(qs, k) for qs, rows in by_set.items() for k in dict.fromkeys(m.metric for m in rows)]
    value: dict[tuple[str, str, str], float] = {
        (m.query_set, m.model, m.metric): m.value for m in view.metrics
    }
    x = [_label(k) if len(by_set) == 1 else f"{_label(k)} · {qs}" for qs, k in cols]
    fig = go.Figure()
    for model in models:
        fig.add_bar(x=x, y=[value.get((qs, model, k)) for qs, k in cols], name=_label(model))
    sets = "; ".join(f"{query_set_label(qs)} ({rows[0].n_queries} queries)" for qs, rows in by_set.items())
    fig.update_layout(
        title=f"Retrieval metrics per iteration vs base and BM25, on {sets}",
        barmode="group",
        yaxis_range=[0, 1],
    )
    if "inverse-cloze" in by_set:
        fig.add_annotation(
            text="Pseudo-query gains do not show real-query gains: give --eval-file to measure on real "
            "queries.",
            xref="paper", yref="paper", x=0, y=1.08, showarrow=False, font={"color": "#b45309"},
        )  # fmt: skip
    return fig


FIGURES = [
    ("funnel", funnel_figure),
    ("cost", cost_figure),
    ("approval", approval_figure),
    ("mix", mix_figure),
    ("scores", scores_figure),
    ("metrics", metrics_figure),
]


# --- tables ----------------------------------------------------------------------------------------------


def _stage_table(view: RunView) -> str:
    rows = [[r.stage, r.status_text, r.outputs, r.seconds, r.cost_usd, r.note] for r in stage_rows(view)]
    return _table(list(STAGE_COLUMNS), rows, {3, 4})


def _samples(view: RunView, rng: random.Random) -> str:
    parts = []
    for path in sorted(view.dir.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        total = pf.metadata.num_rows
        # A sample from the first rows only: bounded memory on a large artifact.
        head = next(pf.iter_batches(batch_size=1000), None)
        rows = head.to_pylist() if head is not None else []
        picked = sorted(rng.sample(range(len(rows)), min(SAMPLE_ROWS, len(rows))))
        cols = pf.schema_arrow.names
        parts.append(f"<h3>{e(path.name)} <span class='note'>({total} rows)</span></h3>")
        parts.append(_table(cols, ([rows[i][c] for c in cols] for i in picked)))
    return "".join(parts) or "<p class='note'>No artifacts.</p>"


def _skipped_table(skipped: list[dict[str, Any]]) -> str:
    if not skipped:
        return "<p class='note'>None: every input was read.</p>"
    return _table(
        ["path", "line", "reason"], ([s.get("path"), s.get("line"), s.get("reason")] for s in skipped)
    )


def _kpis(view: RunView) -> str:
    appr = view.approval()
    rate = (
        "n/a"
        if appr["rate"] is None
        else f"{100 * appr['rate']:.1f}% [{100 * appr['low']:.0f}–{100 * appr['high']:.0f}]"
    )
    best = view.best_model()
    items = [
        ("teacher", view.teacher),
        ("judge", view.judge),
        ("queries", len(view.queries)),
        ("Q&A pairs", len(view.qa_pairs)),
        ("approval (95% CI)", rate),
        ("triplets", len(view.triplets)),
        (
            "time",
            fmt_duration(view.compute_seconds)
            + (
                f" (this run {fmt_duration(view.total_seconds)})"
                if view.compute_seconds - view.total_seconds > 1
                else ""
            ),
        ),
        ("LLM cost", f"${view.total_cost:.4f}"),
        (
            "best model",
            f"{best} (on {query_set_label(qs)})"
            if best and (qs := selection_set(view.metrics))
            else best or "n/a",
        ),
    ]
    return (
        "<div class='grid'>"
        + "".join(f"<div class='kpi'>{e(k)}<b>{e(v)}</b></div>" for k, v in items)
        + "</div>"
    )


def _fusion_section(view: RunView) -> str:
    """A fusion run's retention tables (distiller.fusion), where the run has them."""
    from distiller.fusion.retention import retention_html

    html = retention_html(view.dir)
    return f"<section id='sec-fusion'>{html}</section>" if html else ""


def render_report(run_dir: Path, out: Path | None = None, seed: int = 0) -> Path:
    """Write the run's report (default `<run>/report.html`) and return its path."""
    view = RunView(run_dir, require_manifest=True)
    out = Path(out) if out is not None else view.dir / "report.html"
    rng = random.Random(seed)
    notes = [f"missing: {m}" for m in view.missing_optional()]
    skipped = view.manifest.get("skipped_inputs") or []
    figures = "".join(
        f"<section class='plot' id='sec-{key}'>{_figure_html(fn(view), f'fig-{key}')}</section>"
        for key, fn in FIGURES
    )
    nav = "".join(f"<a href='#sec-{k}'>{k}</a>" for k, _ in FIGURES) + "<a href='#samples'>samples</a>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(view.name)} · domain-distiller report</title>
<style>{CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>Run {e(view.name)}</h1>
<p class="note">Report made {e(datetime.now(UTC).isoformat(timespec="seconds"))} from {e(view.dir)};
run updated {e(view.manifest.get("updated_at", "?"))}.</p>
{_kpis(view)}
{"".join(f"<p class='note'>{e(n)}</p>" for n in notes)}
<nav>{nav}</nav>
<h2>Stages</h2>
{_stage_table(view)}
{figures}
{_fusion_section(view)}
<h2>Skipped inputs ({len(skipped)})</h2>
{_skipped_table(skipped)}
<h2 id="samples">Sampled rows</h2>
{_samples(view, rng)}
</body></html>
"""
    atomic_write_text(out, page)
    return out
