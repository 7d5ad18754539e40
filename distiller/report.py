"""`distill report RUN`: one self-contained HTML page about a run (first version: tables only)."""

from __future__ import annotations

import html
from pathlib import Path

from distiller.export.run import RunView
from distiller.store import atomic_write_text


def render_report(run_dir: Path, out: Path | None = None) -> Path:
    view = RunView(run_dir)
    out = Path(out) if out is not None else view.dir / "report.html"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(s.get('status')))}</td>"
        f"<td>{html.escape(str(s.get('outputs')))}</td><td>{s.get('seconds', 0):.1f}</td>"
        f"<td>{s.get('cost_usd', 0):.4f}</td></tr>"
        for name, s in view.stages.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(view.name)}</title></head><body>"
        f"<h1>Run {html.escape(view.name)}</h1><table><tr><th>stage</th><th>status</th><th>outputs</th>"
        f"<th>seconds</th><th>cost</th></tr>{rows}</table></body></html>"
    )
    atomic_write_text(out, page)
    return out
