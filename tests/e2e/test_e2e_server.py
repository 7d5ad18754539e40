"""The deployments, run the way users run them: PostgreSQL (Debian's package) on 127.0.0.1, a Prefect
server on it, the work pools and limits of deployments/setup.sh, `prefect deploy --all` of prefect.yaml,
a CPU and a GPU-pool process worker, then `prefect deployment run distill/cpu --watch` on a tiny config
whose training is sent to the GPU pool's deployment. The same deployment run again is served from the
cache. The server, init and worker commands are read from docker-compose.yml, so what the compose file
would run is what runs here.

Everything started is stopped by its process group when the module ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from helpers.corpus import ROOT, tiny_overrides

sys.path.insert(0, str(ROOT / "scripts"))
import e2e_services as svc

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
TRAIN_DEPLOYMENT = "distill-train/gpu"


def compose_command(service: str, **swap: str) -> list[str]:
    """A service's command from docker-compose.yml, with container-only values swapped for local ones."""
    return [swap.get(part, part) for part in COMPOSE["services"][service]["command"]]


def compose_healthcheck(service: str) -> list[str]:
    spec = COMPOSE["services"][service].get("healthcheck") or COMPOSE["x-worker"]["healthcheck"]
    kind, *cmd = spec["test"]
    assert kind == "CMD"
    return cmd


def run_cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def api(coro_fn: Any, env: dict[str, str]) -> Any:
    """Run `coro_fn(client)` against the test server (its URL passed explicitly, not from this process)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go() -> Any:
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            async with get_client() as client:
                return await coro_fn(client)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    try:
        svc.pg_bin()
    except RuntimeError as e:
        pytest.skip(f"{e} (make test installs it)")
    base = tmp_path_factory.mktemp("e2e-stack")
    with svc.stack(base) as s:  # stops every process and the database on the way out, pass or fail
        port = svc.free_port()
        server_cmd = compose_command("server", **{"0.0.0.0": "127.0.0.1", "4200": str(port)})
        t0 = time.perf_counter()
        s.start_server(server_cmd, port)
        s.timings["server start"] = time.perf_counter() - t0
        yield s


def test_deploy_and_run_twice_through_the_server(stack: svc.Stack, tiny_corpus: Path, tmp_path: Path) -> None:
    timings = stack.timings
    env = stack.env(PREFECT_WORKER_QUERY_SECONDS="2")

    # -- init: work pools, the `llm` concurrency limit, every deployment (the compose `init` service) --
    t0 = time.perf_counter()
    run_cli(compose_command("init"), env, timeout=300)
    timings["setup.sh + deploy --all"] = time.perf_counter() - t0

    async def read_setup(client: Any) -> dict[str, Any]:
        pools = {p.name: p for p in await client.read_work_pools()}
        limit = await client.read_concurrency_limit_by_tag("llm")
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
        return {
            "pools": pools,
            "limit": limit,
            "deployments": {f"{flows[d.flow_id]}/{d.name}" for d in deployments},
        }

    setup = api(read_setup, env)
    pools = setup["pools"]
    assert {
        "distill-cpu",
        "distill-gpu",
        "distill-docker",
        "distill-kubernetes",
        "distill-kubernetes-gpu",
    } <= set(pools)
    assert pools["distill-gpu"].concurrency_limit == 1
    assert "nvidia.com/gpu" in json.dumps(pools["distill-kubernetes-gpu"].base_job_template)
    assert setup["limit"].concurrency_limit == 4
    assert {"distill/cpu", TRAIN_DEPLOYMENT, "distill-from-file/nightly", "distill-ingest/cpu"} <= setup[
        "deployments"
    ]

    # -- workers, as in docker-compose.yml, and their health checks ----------------------------------
    for service in ("worker-cpu", "worker-gpu"):
        health_port = svc.free_port()
        stack.start_worker(compose_command(service), service, health_port)
        check = [c.replace("8080", str(health_port)) for c in compose_healthcheck(service)]
        _wait_healthy(check, env)

    # -- run 1: the end-to-end deployment on a tiny corpus, training sent to the GPU pool ------------
    runs = tmp_path / "runs"
    config = tiny_overrides(
        tiny_corpus,  # six documents of examples/medquad-mini
        runs,
        run_name="e2e",
        # One negative per query: fewer triplets, a few training steps on a 2-core machine.
        mining={"negatives_per_query": 1},
        training={"save_steps": 1000, "deployment": TRAIN_DEPLOYMENT, "deployment_timeout_s": 600},
    )
    params = json.dumps({"config": config})

    first, t_first = _run_deployment("distill/cpu", params, env)
    timings["run 1 (wall)"] = t_first
    assert first["state"] == "COMPLETED" and first["watch_exit_code"] == 0, first
    run_dir = runs / "e2e"
    for name in ("sources", "chunks", "passages", "queries", "qa_pairs", "triplets_iter1", "metrics"):
        import pyarrow.parquet as pq

        assert pq.read_table(run_dir / f"{name}.parquet").num_rows > 0, name
    assert (run_dir / "models" / "iter1").is_dir() and (run_dir / "models" / "best").is_dir()
    assert (run_dir / "report.html").is_file() and any((run_dir / "exports").iterdir())

    states1 = _task_states(first["id"], env)
    # A stage with nothing to do here (validation without an LLM judge) finishes `Skipped`.
    shards1 = {k for k in states1 if k.startswith(("encode-", "ingest-shard-", "search-"))}
    ran = {k for k, v in states1.items() if v == "Completed" and k not in shards1}
    assert {"ingest", "generate", "mine-iter1", "evaluate", "export", "report"} <= ran, json.dumps(states1)
    # ingest's file groups, mine's and evaluate's encoding shards and their query-shard searches ran as
    # tasks of their own before them (evaluate encodes iteration 1 only: the base model's are mining's)
    assert {
        "ingest-shard-0",
        "encode-mine_iter1-document-0",
        "encode-mine_iter1-query-0",
        "encode-evaluate-iter1-document-0",
        "encode-evaluate-iter1-query-0",
        "search-mine_iter1-0",
        "search-evaluate-base-0",
        "search-evaluate-iter1-0",
    } <= shards1, json.dumps(states1)
    assert not any(k.startswith("encode-evaluate-base") for k in shards1), json.dumps(states1)
    assert set(states1.values()) <= {"Completed", "Skipped"}, json.dumps(states1)
    train1 = _train_subflow(first["id"], env)
    assert train1["pool"] == "distill-gpu" and train1["state"] == "COMPLETED", train1
    assert train1["tasks"] == {"train-iter1": "Completed"}, train1

    artifacts = _artifacts(first["id"], env)
    assert {"table", "markdown"} <= {a.type for a in artifacts}
    tables = {a.key: a for a in artifacts if a.type == "table"}
    ingest_rows = json.loads(tables["e2e-ingest"].data)
    assert any(r["artifact"] == "chunks.parquet" and r["rows"] > 0 for r in ingest_rows), ingest_rows
    summary = next(a for a in artifacts if a.type == "markdown")
    assert "e2e" in summary.data and "evaluate" in summary.data

    # -- run 2: the same deployment and config; every stage is served from the cache ---------------
    second, t_second = _run_deployment("distill/cpu", params, env)
    timings["run 2 (wall)"] = t_second
    assert second["state"] == "COMPLETED" and second["watch_exit_code"] == 0, second
    states2 = _task_states(second["id"], env)
    # every shard is on disk: the second run plans none (the stages find them all, cached)
    assert set(states2) == set(states1) - shards1, json.dumps(states2)
    assert {k for k, v in states2.items() if v == "Cached"} == ran, json.dumps(states2)
    train2 = _train_subflow(second["id"], env)
    assert train2["tasks"] == {"train-iter1": "Cached"}, train2
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    statuses = {k: v["status"] for k, v in manifest["stages"].items()}
    assert {"ingest", "generate", "mine_iter1", "train_iter1", "evaluate", "export", "report"} <= {
        k for k, v in statuses.items() if v == "cached"
    }, statuses
    assert set(statuses.values()) <= {"cached", "skipped"}, statuses

    print(
        "\n"
        + "\n".join(f"{k}: {v:.1f}s" for k, v in timings.items())
        + f"\nrun 1 flow run {first['state']} ({first['seconds']:.1f}s run time); tasks {states1}; "
        f"train sub-flow {train1}\nrun 2 flow run {second['state']} ({second['seconds']:.1f}s run time); "
        f"tasks {states2}; train sub-flow {train2}"
    )


# -- helpers ---------------------------------------------------------------------------------------------
def _wait_healthy(cmd: list[str], env: dict[str, str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"health check {cmd} failing after {timeout_s:.0f}s")
        time.sleep(1)


def _run_deployment(name: str, params: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["prefect", "deployment", "run", name, "--params", params, "--watch", "--watch-timeout", "600"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=660,
    )
    wall = time.perf_counter() - t0
    found = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
    assert found, f"no flow run id in:\n{proc.stdout}\n{proc.stderr}"
    run_id = UUID(found.group(1))

    async def read(client: Any) -> dict[str, Any]:
        fr = await client.read_flow_run(run_id)
        return {
            "id": run_id,
            "state": fr.state.type.value if fr.state else None,
            "seconds": fr.total_run_time.total_seconds(),
        }

    info = api(read, env)
    info["watch_exit_code"] = proc.returncode  # --watch exits non-zero unless the run completed
    if info["state"] != "COMPLETED" or proc.returncode != 0:
        info["cli"] = proc.stdout[-4000:] + proc.stderr[-2000:]
    return info, wall


def _stage(task_run_name: str) -> str:
    """'ingest-3fa' -> 'ingest' (Prefect suffixes a task run's name; mine/train name theirs by iteration)."""
    return re.sub(r"-[0-9a-f]{3}$", "", task_run_name)


def _task_states(flow_run_id: UUID, env: dict[str, str]) -> dict[str, str]:
    """Stage task runs of a flow run by name (the sub-flow placeholder of run_deployment left out)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read(client: Any) -> dict[str, str]:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        stages = [t for t in runs if t.state and ".run_deployment." not in t.task_key]
        return {_stage(t.name): t.state.name for t in stages}

    return api(read, env)


def _train_subflow(parent_id: UUID, env: dict[str, str]) -> dict[str, Any]:
    """The training run that run_deployment started for this flow run: pool, state, task states."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    async def read(client: Any) -> dict[str, Any]:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
        assert len(children) == 1, [c.name for c in children]
        child = children[0]
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[child.id]))
        )
        return {
            "pool": child.work_pool_name,
            "state": child.state.type.value if child.state else None,
            "tasks": {_stage(t.name): t.state.name for t in tasks if t.state},
        }

    return api(read, env)


def _artifacts(flow_run_id: UUID, env: dict[str, str]) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read(client: Any) -> list[Any]:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )

    return api(read, env)
