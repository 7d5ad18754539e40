"""The stage order exists once (`distiller.stages.stage_plan`): the in-process runner and the `distill`
flow both follow it, and every stage has one module (with its cache-key VERSION) and one task."""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest

from distiller.config import DistillConfig
from distiller.stages import STAGE_FUNCTIONS, Step, data_plan, stage_plan
from distiller.stages.plan import StageName


def _configs(tmp_path: Path) -> dict[str, DistillConfig]:
    runs = str(tmp_path / "runs")
    return {
        "documents": DistillConfig(input={"paths": ["docs/"]}, runs_dir=runs, mining={"iterations": 2}),
        "labeled": DistillConfig(input={"qa_file": "faq.csv"}, runs_dir=runs),
        "bootstrap": DistillConfig(generation={"domain": "legal"}, runs_dir=runs),
    }


def test_the_plan_per_mode(tmp_path: Path) -> None:
    cfgs = _configs(tmp_path)
    names = {mode: [s.stage for s in stage_plan(c)] for mode, c in cfgs.items()}
    tail = ["evaluate", "export", "report"]
    assert names["documents"] == ["ingest", "generate", "validate", "mine", "train", "mine", "train", *tail]
    assert names["labeled"] == ["labeled", "mine", "train", *tail]
    assert names["bootstrap"][:3] == ["bootstrap", "generate", "validate"]
    assert [s.args for s in stage_plan(cfgs["documents"]) if s.stage == "train"] == [(1,), (2,)]
    assert [s.stage for s in data_plan(cfgs["documents"])] == ["ingest", "generate", "validate"]


def test_one_module_function_and_task_per_stage() -> None:
    from tasks.stages import STAGE_TASKS

    every = set(typing.get_args(StageName))
    assert set(STAGE_FUNCTIONS) == set(STAGE_TASKS) == every
    for name in every:
        module = importlib.import_module(f"distiller.stages.{name}")
        assert isinstance(module.VERSION, str)
        assert STAGE_FUNCTIONS[name].__module__ == module.__name__


def test_runner_follows_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distiller import pipeline

    for cfg in _configs(tmp_path).values():
        seen: list[Step] = []
        monkeypatch.setattr(pipeline, "run_step", lambda step, *a, seen=seen, **k: seen.append(step))
        pipeline.run_pipeline(cfg)
        assert seen == stage_plan(cfg)


def test_flow_follows_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.distill as flow_module

    monkeypatch.setattr(flow_module, "create_markdown_artifact", lambda **kw: None)
    cfgs = _configs(tmp_path)
    for mode in ("documents", "labeled"):  # bootstrap mode needs an LLM teacher (the flow's preflight)
        seen: list[Step] = []
        monkeypatch.setattr(flow_module, "run_step", lambda step, *a, seen=seen: seen.append(step))
        flow_module.distill.fn(config=cfgs[mode])
        assert seen == stage_plan(cfgs[mode])
