"""`distill status` / `distill runs` renderables: key figures of a run and of a folder of runs."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.run_fixtures import make_run
from rich.console import Console

from distiller.summary import run_figures, runs_json, runs_table, status_renderable


def _text(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_status_shows_stages_rows_time_cost_and_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    text = _text(status_renderable(run))
    for stage in ("ingest", "generate", "validate", "mine", "train", "evaluate"):
        assert stage in text
    assert "chunks.parquet (20)" in text and "qa_pairs.parquet (20)" in text
    assert "total" in text and "46.9" in text and "0.0036" in text  # seconds and cost summed
    assert "iter2 ★ best" in text and "0.620 (+0.120)" in text  # best model, change vs base
    assert "approval 66.7%" in text and "docs/broken.pdf" in text and "encrypted PDF" in text


def test_status_of_an_offline_run_says_what_is_missing(tmp_path: Path) -> None:
    text = _text(status_renderable(make_run(tmp_path, "off", offline=True)))
    assert "missing: ledger.parquet (offline teacher: no LLM calls)" in text
    assert "offline inverse-cloze" in text and "0.0000" in text


def test_runs_table_lists_every_run_and_survives_a_broken_one(tmp_path: Path) -> None:
    make_run(tmp_path, "alpha")
    make_run(tmp_path, "beta", offline=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "not-a-run").mkdir()
    text = _text(runs_table(tmp_path))
    assert "Runs in" in text and "(3)" in text
    assert "alpha" in text and "beta" in text and "unreadable" in text and "JSONDecodeError" in text
    assert "20 (67%)" in text  # Q&A pairs with approval rate
    assert "MRR@5 0.620 (+0.120)" in text
    figures = {f["name"]: f for f in json.loads(runs_json(tmp_path))}
    assert figures["alpha"]["best"] == "iter2" and figures["beta"]["qa_pairs"] == 0
    assert run_figures(tmp_path / "alpha").state == "done"


def test_run_text_is_not_parsed_as_markup(tmp_path: Path) -> None:
    run = make_run(tmp_path, "marked")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["ingest"]["message"] = "read [red]file[/red] and [bold]"
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "read [red]file[/red] and [bold]" in _text(status_renderable(run))


def test_empty_folder(tmp_path: Path) -> None:
    assert "(0)" in _text(runs_table(tmp_path / "nothing-here"))


def test_a_fusion_run_is_not_missing_metrics_it_keeps_in_retention(tmp_path: Path) -> None:
    from distiller.runview import RunView

    run = make_run(tmp_path, "fused", offline=True)
    (run / "metrics.parquet").unlink()
    assert "metrics.parquet" in RunView(run).missing_optional()  # a plain run without its evaluation
    (run / "retention.parquet").write_bytes((run / "chunks.parquet").read_bytes())  # any Parquet file
    missing = RunView(run).missing_optional()
    assert "metrics.parquet" not in missing and "retention.parquet" not in missing
