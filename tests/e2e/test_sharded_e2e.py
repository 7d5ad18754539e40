"""Sharded encoding end to end: the `distill` flow with its shards on a two-worker Dask cluster gives the
unsharded run's artifacts; documents added to a finished run encode only new shards."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.corpus import EXAMPLES, tiny_overrides

from distiller.config import DistillConfig, load_config
from distiller.stages import open_store, run_step, stage_plan

SCORES = ["positive_score", "negative_score"]


def _config(corpus: Path, root: Path, **extra: Any) -> DistillConfig:
    return load_config(None, tiny_overrides(corpus, root / "runs", cache_dir=str(root / "cache"), **extra))


def _same_frame(a: pd.DataFrame, b: pd.DataFrame, floats: list[str]) -> None:
    keys = [c for c in a.columns if c not in floats]
    pd.testing.assert_frame_equal(a[keys], b[keys])
    for c in floats:
        assert (a[c] - b[c]).abs().max() < 1e-5, c


def test_sharded_flow_on_two_dask_workers_equals_the_unsharded_run(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from flows import stages as flow_stages
    from flows.distill import distill
    from flows.stages import with_runner

    handed: list[list[Any]] = []  # what the flow handed Dask, in its order
    order = flow_stages.largest_first

    def recorded(specs: list[Any]) -> list[Any]:
        handed.append(order(specs))
        return handed[-1]

    monkeypatch.setattr(flow_stages, "largest_first", recorded)

    plain = _config(tiny_corpus, tmp_path / "plain", encoding={"shard_size": 0}, input={"files_per_shard": 0})
    distill(config=plain)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        sharded = _config(
            tiny_corpus,
            tmp_path / "sharded",
            encoding={"shard_size": 8},
            input={"files_per_shard": 2},
            runner="dask",
            dask_address=cluster.scheduler_address,
        )
        with get_task_stream(client) as stream:
            with_runner(distill, sharded)(config=sharded)
        workers = set(cluster.scheduler_info["workers"])
    a, b = (open_store(c).dir for c in (plain, sharded))
    for name in ("sources.parquet", "chunks.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    _same_frame(
        pd.read_parquet(a / "triplets_iter1.parquet"), pd.read_parquet(b / "triplets_iter1.parquet"), SCORES
    )
    _same_frame(pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet"), ["value"])
    assert (a / "models/best/distiller_best.txt").read_text() == (
        b / "models/best/distiller_best.txt"
    ).read_text()

    # The shards were encode-shard tasks spread over both workers, before the stages that use them ran.
    ingest_runs = [e for e in stream.data if e["key"].startswith("ingest_shard_task")]
    assert len(ingest_runs) == 3  # six files, two per shard
    assert open_store(sharded).stage_results()["ingest"].details["shards_reused"] == 3
    shard_runs = [e for e in stream.data if e["key"].startswith("encode_shard_task")]
    assert len(shard_runs) >= 6 and {e["worker"] for e in shard_runs} == workers and len(workers) == 2
    mine = open_store(sharded).stage_results()["mine_iter1"].details
    evaluate = open_store(sharded).stage_results()["evaluate"].details
    assert mine["shards"] > 2 and mine["shards_encoded"] == 0 and mine["shards_reused"] == mine["shards"]
    assert evaluate["shards"] > 2 and evaluate["shards_encoded"] == 0
    encoded = [p for p in (b / "shards").rglob("*.npy") if p.name.startswith(("document-", "query-"))]
    assert len(encoded) == len(shard_runs)
    # then each query shard of mining (training queries) and of evaluation (held-out queries, per model)
    # was searched as a task of its own; the stages found every search done
    search_runs = [e for e in stream.data if e["key"].startswith("search_shard_task")]
    # each map went to Dask biggest shard first
    kinds = {type(specs[0]).__name__ for specs in handed}
    assert kinds == {"IngestShard", "EncodeShard", "SearchShard"}
    costs = [[s.cost for s in specs] for specs in handed]
    assert all(c == sorted(c, reverse=True) for c in costs)
    planned = [[s.cost for s in sorted(specs, key=lambda s: s.index)] for specs in handed]
    assert costs != planned, "no map was out of plan order: the check shows nothing"
    assert mine["searches"] > 1 and mine["searches_run"] == 0
    assert evaluate["searches"] >= 2 and evaluate["searches_run"] == 0  # base, iteration 1
    assert len(search_runs) == mine["searches"] + evaluate["searches"]
    # every embedding and search came from those tasks: evaluation loaded no model, encoded nothing
    assert "encoder" not in evaluate
    assert mine["shard_files_pruned"] == evaluate["shard_files_pruned"] == 0  # a first run: nothing stale
    assert "searches" not in open_store(plain).stage_results()["evaluate"].details
    assert "shards" not in open_store(plain).stage_results()["mine_iter1"].details


def _until_mine(cfg: DistillConfig) -> dict[str, Any]:
    store = open_store(cfg)
    for step in stage_plan(cfg):
        if step.stage == "train":
            break
        run_step(step, store, cfg)
    return store.stage_results()["mine_iter1"].details


def test_added_documents_encode_only_new_shards(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_corpus, tmp_path / "inc", encoding={"shard_size": 8})
    first = _until_mine(cfg)
    assert first["shards_encoded"] == first["shards"] > 4
    for name in (
        "benign-essential-blepharospasm.md",
        "inflammatory-myopathies.md",
    ):  # two more documents: 6 -> 8
        shutil.copy(EXAMPLES / name, tiny_corpus / name)
    again = _until_mine(cfg)
    print(
        "incremental:",
        first["shards"],
        "shards first;",
        again["shards_encoded"],
        "of",
        again["shards"],
        "encoded after adding 2 documents",
    )
    # The new rows open new shards (the run keeps each old row's shard group); at most one old shard per
    # role (passages, queries) changes: the newest, topped up with new rows before a new one opens.
    opened = again["shards"] - first["shards"]
    assert opened > 0 and opened <= again["shards_encoded"] <= opened + 2, again
    assert again["shards_reused"] == again["shards"] - again["shards_encoded"]
    # The old file of each topped-up shard is gone, and every old search with its selection (the corpus
    # changed): the model's folder holds what this run's mining plans (no evaluation ran).
    assert again["shard_files_pruned"] == again["shards_encoded"] - opened + first["searches"] + 1
    (folder,) = _model_folders(open_store(cfg))
    names = [p.name.split("-")[0] for p in folder.iterdir()]
    assert names.count("document") + names.count("query") == again["shards"]
    assert (names.count("search"), names.count("select")) == (again["searches"], 1)
    # the same triplets as a cold run on the eight documents
    cold = _config(tiny_corpus, tmp_path / "cold", encoding={"shard_size": 8})
    assert _until_mine(cold)["shards_encoded"] == again["shards"]
    runs = [open_store(c).path("triplets_iter1.parquet") for c in (cfg, cold)]
    _same_frame(pd.read_parquet(runs[0]), pd.read_parquet(runs[1]), SCORES)


def test_evaluation_reads_minings_shards_and_a_retraining_prunes_the_old_models(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distiller.stages.evaluate
    from distiller.pipeline import run_pipeline

    loaded: list[str] = []
    load = distiller.stages.evaluate.load_encoder_for

    def counted(cfg: DistillConfig, path: str) -> Any:
        loaded.append(path)
        return load(cfg, path)

    monkeypatch.setattr(distiller.stages.evaluate, "load_encoder_for", counted)
    cfg = _config(tiny_corpus, tmp_path / "prune", encoding={"shard_size": 16})
    store = run_pipeline(cfg)
    mine = store.stage_results()["mine_iter1"].details
    first = store.stage_results()["evaluate"].details
    # Evaluation encodes only iteration 1's shards: the base model's are mining's, read as they are.
    assert first["shards_reused"] == mine["shards"] and first["shards_encoded"] == mine["shards"]
    assert first["shards"] == 2 * mine["shards"] and first["shard_folders_pruned"] == 0
    assert first["shard_files_pruned"] == 0 and loaded == []  # no model: shards hold all it needs
    # its held-out queries were searched per query shard (here, in the stage: no flow planned them)
    assert first["searches"] == first["searches_run"] >= 2
    searches = [p for p in store.path("shards").rglob("search-*.npz")]
    assert len(searches) == mine["searches"] + first["searches"]
    assert len(_model_folders(store)) == 2  # base, iter1
    # A retraining (another learning rate) makes a new iteration 1: its old shards go, the base's stay.
    lr = 2 * (cfg.training.offline_learning_rate or cfg.training.learning_rate)
    again = _config(
        tiny_corpus, tmp_path / "prune", encoding={"shard_size": 16}, training={"offline_learning_rate": lr}
    )
    store = run_pipeline(again)
    results = store.stage_results()
    assert results["mine_iter1"].status == "cached" and results["train_iter1"].status == "completed"
    second = results["evaluate"].details
    assert second["shard_folders_pruned"] == 1 and second["shards_encoded"] == mine["shards"]
    assert second["shard_files_pruned"] == 0 and loaded == []  # the base's shards are all live
    assert len(_model_folders(store)) == 2


def _model_folders(store: Any) -> list[Path]:
    return [p for p in store.path("shards").iterdir() if p.is_dir() and p.name != "ingest"]


def test_llm_shards_on_two_dask_workers_equal_one_pass_and_stay_in_budget(
    llm_server: Any, tmp_path: Path
) -> None:
    """The LLM teacher's chunk shards as `generate-shard` tasks and the judge's sample shards as
    `judge-shard` tasks on two worker processes, each under its hard grant: the same rows and verdicts as
    one pass in this process, and with a tight budget, never past it (the server's bill is the ledger's,
    shard journals included)."""
    from distributed import Client, LocalCluster, get_task_stream
    from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

    from distiller.llm.ledger import read_ledger
    from flows.stages import generate_flow, ingest_flow, validate_flow, with_runner

    prices = {"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_tokens": 256}
    llm_server.responder = ScriptedTeacher()
    llm_server.input_price_per_mtok, llm_server.output_price_per_mtok = 15.0, 60.0
    corpus = write_corpus(tmp_path / "docs")

    def config(name: str, budget: float, per_shard: int, **extra: Any) -> DistillConfig:
        return llm_run_config(
            llm_server,
            tmp_path / name,
            input={"paths": [str(corpus)]},
            teacher=prices,
            generation={
                "queries_per_chunk": 2,
                "questions_per_chunk": 2,
                "template": "legal",
                "chunks_per_shard": per_shard,
            },
            validation={"sample_rate": 0.5, "items_per_shard": per_shard + 1},
            budget={"run_usd": budget},
            **extra,
        )

    one = config("one", 5.0, 0)
    for flow_ in (ingest_flow, generate_flow, validate_flow):
        flow_(config=one)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        dask = {"runner": "dask", "dask_address": cluster.scheduler_address}
        wide = config("wide", 5.0, 2, **dask)
        with get_task_stream(client) as stream:
            for flow_ in (ingest_flow, generate_flow, validate_flow):
                with_runner(flow_, wide)(config=wide)
        workers = set(cluster.scheduler_info["workers"])
        shard_runs = [e for e in stream.data if e["key"].startswith("generate_shard_task")]
        assert len(shard_runs) > 2 and {e["worker"] for e in shard_runs} == workers and len(workers) == 2
        a, b = open_store(one).dir, open_store(wide).dir
        for name in ("queries.parquet", "qa_pairs.parquet", "passages.parquet", "judgments.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
        details = open_store(wide).stage_results()["generate"].details
        assert details["shards_generated"] == details["shards"] == len(shard_runs)
        judge_runs = [e for e in stream.data if e["key"].startswith("judge_shard_task")]
        assert len(judge_runs) > 1 and {e["worker"] for e in judge_runs} == workers
        assert open_store(wide).stage_results()["validate"].details["shards_judged"] == len(judge_runs)

        billed_before = llm_server.billed_usd
        budget = 0.15
        tight = config("tight", budget, 2, **dask)
        for flow_ in (ingest_flow, generate_flow, validate_flow):
            with_runner(flow_, tight)(config=tight)
    billed = llm_server.billed_usd - billed_before
    assert 0 < billed <= budget
    rows = read_ledger(open_store(tight).dir)
    assert sum(e.cost_usd for e in rows) == pytest.approx(billed)
    assert {e.shard for e in rows} - {""}, "no call was a shard's"
    results = open_store(tight).stage_results()
    assert results["generate"].details["stopped_by_budget"]
    assert results["generate"].cost_usd + results["validate"].cost_usd == pytest.approx(billed)
