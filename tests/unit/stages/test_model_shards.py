"""Mine's and evaluate's shards of a model: a flow step plans its encodings and searches in one call;
evaluation reads them without loading a model it has no use for; a stage prunes the files of a model's
shard folder that no current plan of mining or evaluation names."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.corpus import EXAMPLES, tiny_overrides

import distiller.stages.encoding
import distiller.stages.evaluate
import distiller.stages.mine
import distiller.store
from distiller.config import DistillConfig, load_config
from distiller.retrieval.models import resolve_student
from distiller.stages import evaluate_stage, generate_stage, ingest_stage, mine_stage, open_store
from distiller.stages.plan import Step
from distiller.stages.shard_work import run_shard
from distiller.store import RunStore


def _run(corpus: Path, root: Path, **extra: Any) -> DistillConfig:
    """A run folder up to training, and a models/iter1 for evaluation: the base model's files, as if
    trained (a folder, so hashed for its identity)."""
    cfg = _config(corpus, root, **extra)
    _generate(cfg)
    model = open_store(cfg).path("models/iter1")
    shutil.copytree(resolve_student(cfg.training.student), model)
    return cfg


def _config(corpus: Path, root: Path, **extra: Any) -> DistillConfig:
    return load_config(None, tiny_overrides(corpus, root / "runs", cache_dir=str(root / "cache"), **extra))


def _generate(cfg: DistillConfig) -> RunStore:
    store = open_store(cfg)
    ingest_stage(store, cfg)
    generate_stage(store, cfg)
    return store


SHARDED = {"encoding": {"shard_size": 8}}


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, calls: list[Any]) -> None:
    """Record each call of `module.name` (its first argument), then call it."""
    fn: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return fn(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_flow_step_plans_once_then_maps_its_encodings_before_their_searches(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import stages as flow

    cfg = _run(tiny_corpus, tmp_path, **SHARDED)
    mapped: list[tuple[str, int]] = []

    def here(step: Step, config: DistillConfig, specs: list[Any]) -> list[Any]:
        """The flow's fan-out, in this process and in the order asked."""
        if specs:
            mapped.append((type(specs[0]).__name__, len(specs)))
        return [run_shard(s, config) for s in specs]

    monkeypatch.setattr(flow, "_map_shards", here)
    reads: list[Any] = []
    hashed: list[Any] = []
    for module in (distiller.stages.mine, distiller.stages.evaluate):
        _counting(monkeypatch, module, "read_parquet", reads)
    for module in (distiller.store, distiller.stages.encoding):
        _counting(monkeypatch, module, "sha256_path", hashed)
    trained = open_store(cfg).path("models/iter1")

    for step in (Step("mine", 1), Step("evaluate")):
        mapped.clear()
        reads.clear()
        hashed.clear()
        flow.run_shards(step, cfg)
        # one plan: the passages and queries read once, models/iter1 hashed once (evaluate)
        assert [Path(p).name for p in reads] == ["passages.parquet", "queries.parquet"], step
        assert hashed.count(trained) == (step.stage == "evaluate"), step
        assert [kind for kind, _ in mapped] == ["EncodeShard", "SearchShard"], step
        # the stage then finds every shard and search done
        store = open_store(cfg)
        result = mine_stage(store, cfg, 1) if step.stage == "mine" else evaluate_stage(store, cfg)
        assert result.details["shards_encoded"] == 0 and result.details["searches_run"] == 0
        assert result.details["searches"] == mapped[1][1]


def test_evaluation_from_shards_loads_a_model_only_for_the_eval_file(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Any] = []
    _counting(monkeypatch, distiller.stages.evaluate, "load_encoder_for", loads)
    cfg = _run(tiny_corpus, tmp_path / "sharded", **SHARDED)
    sharded = evaluate_stage(open_store(cfg), cfg)
    # every embedding and search is in the shards: no model is loaded, and the encoder is the shards'
    assert loads == [] and sharded.details["searches"] == sharded.details["searches_run"] >= 2  # base, iter1
    assert (
        sharded.details["shards_encoded"] == sharded.details["shards"]
        and sharded.details["encoder"] == "torch"
    )
    # the same metrics as one in-memory encoding with each loaded model
    plain = _run(tiny_corpus, tmp_path / "plain", encoding={"shard_size": 0})
    evaluate_stage(open_store(plain), plain)
    assert len(loads) == 2
    frames = [pd.read_parquet(open_store(c).path("metrics.parquet")) for c in (cfg, plain)]
    pd.testing.assert_frame_equal(frames[0].drop(columns="value"), frames[1].drop(columns="value"))
    assert (frames[0].value - frames[1].value).abs().max() < 1e-6
    # An eval file is encoded by the models themselves: each is loaded for it.
    loads.clear()
    eval_file = {"eval_file": str(EXAMPLES.parent / "medquad-mini-eval")}
    with_file = _config(tiny_corpus, tmp_path / "sharded", evaluation=eval_file, **SHARDED)
    result = evaluate_stage(open_store(with_file), with_file)
    assert len(loads) == 2 and result.details["eval_queries"] and result.details["shards_encoded"] == 0
    assert result.details["encoder"] == "torch"


def _files(store: RunStore, cfg: DistillConfig) -> tuple[set[str], set[str], set[str]]:
    """The files of the base model's shard folder, of models/iter1's, and the run's group files."""
    from distiller.stages.common import model_ref
    from distiller.stages.encoding import model_folder

    base = model_folder(store, model_ref(store, cfg, 1)[1])
    trained = model_folder(store, store.path("models/iter1"))
    groups = {f.name for f in store.path("shards").glob("groups-*.parquet")}
    return {f.name for f in base.iterdir()}, {f.name for f in trained.iterdir()}, groups


def _of(files: set[str], *kinds: str) -> set[str]:
    return {f for f in files if f.startswith(tuple(k + "-" for k in kinds))}


def test_a_topped_up_run_prunes_only_the_files_no_stage_plans(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = _run(tiny_corpus, tmp_path, **SHARDED)
    store = open_store(cfg)
    assert not store.path("shards/groups-dedup.parquet").exists()  # offline: no near-duplicate check
    assert mine_stage(store, cfg, 1).details["shard_files_pruned"] == 0
    assert evaluate_stage(store, cfg).details["shard_files_pruned"] == 0
    first = _files(store, cfg)
    # A document more: its passages and queries top up the newest group of each role, then open new ones.
    shutil.copy(EXAMPLES / "benign-essential-blepharospasm.md", tiny_corpus)
    _generate(cfg)
    mined = mine_stage(store, cfg, 1).details
    evaluated = evaluate_stage(store, cfg).details
    assert 0 < mined["shards_encoded"] < mined["shards"]
    base, trained, groups = now = _files(store, cfg)
    assert groups == first[2] and groups  # never pruned
    # What is left is what the plans name: each group's encoding, in both folders; evaluation's searches
    # with base and iter1 and mining's with base (the model iteration 1 mines with), one selection each.
    assert len(_of(base, "document", "query")) == len(_of(trained, "document", "query")) == mined["shards"]
    assert len(_of(base, "search") | _of(trained, "search")) == mined["searches"] + evaluated["searches"]
    assert (len(_of(base, "select")), len(_of(trained, "select"))) == (2, 1)
    # and each stage counted what it removed: the old versions of the topped-up groups, the old searches
    gone = len(first[0] - base) + len(first[1] - trained)
    assert gone > 0 and mined["shard_files_pruned"] + evaluated["shard_files_pruned"] == gone
    assert mined["shard_files_pruned"] > 0 and evaluated["shard_files_pruned"] > 0

    # Mining again (another setting, the same shards) finds its searches and leaves evaluation's.
    again = _config(tiny_corpus, tmp_path, mining={"hard_positive_rank_min": 3}, **SHARDED)
    rerun = mine_stage(open_store(again), again, 1).details
    assert rerun["searches_run"] == rerun["shards_encoded"] == rerun["shard_files_pruned"] == 0
    assert _files(store, cfg) == now


def test_generations_query_shards_in_the_base_models_folder_are_never_pruned(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """The near-duplicate check encodes generation's queries with the base model into its shard folder,
    in groups of its own that neither mining nor evaluation plans: they stay, whatever those prune."""
    from distiller.stages.encoding import dedup_encoder

    cfg = _run(tiny_corpus, tmp_path, **SHARDED)
    store = open_store(cfg)
    dedup_encoder(store, cfg)([f"a question about topic {n} that no stage plans" for n in range(20)])
    (base,) = [d for d in store.path("shards").iterdir() if d.is_dir() and d.name != "ingest"]
    kept = set(base.iterdir())
    mine_stage(store, cfg, 1)
    shutil.copy(EXAMPLES / "benign-essential-blepharospasm.md", tiny_corpus)
    _generate(cfg)
    assert mine_stage(store, cfg, 1).details["shard_files_pruned"] > 0
    assert kept <= set(base.iterdir())
