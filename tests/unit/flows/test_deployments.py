"""How domain-distiller is deployed, checked without Docker or a server: docker-compose.yml against the
Compose Specification's schema, prefect.yaml's entry points and pools, the base job templates, the
Dockerfile's pins; and the Dask task runner on a local cluster of two worker processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.corpus import ROOT, tiny_overrides

COMPOSE_FILE = ROOT / "docker-compose.yml"
PREFECT_YAML = ROOT / "prefect.yaml"
POOLS_DIR = ROOT / "deployments" / "pools"
SETUP_SH = ROOT / "deployments" / "setup.sh"
BIN = Path(sys.executable).parent
IMAGE_REPO = "/opt/distiller"  # WORKDIR of the Dockerfile


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))


def _setup_pools() -> dict[str, tuple[str, str]]:
    """name -> (type, template) of every `pool NAME TYPE TEMPLATE` line in setup.sh."""
    found = re.findall(r"^pool (\S+) (\S+) (\S+)", SETUP_SH.read_text(encoding="utf-8"), re.M)
    return {name: (kind, template) for name, kind, template in found}


# -- docker-compose.yml ----------------------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_spec() -> None:
    # The Compose Specification's schema as check-jsonschema ships it (vendor.compose-spec).
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_services_fit_together() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "server", "init", "worker-cpu", "worker-gpu"}
    for name in ("postgres", "server", "worker-cpu", "worker-gpu"):
        assert services[name]["healthcheck"]["test"], name
    assert services["server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["init"]["depends_on"]["server"]["condition"] == "service_healthy"
    assert "postgresql+asyncpg://" in services["server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert any(p.endswith(":4200") for p in services["server"]["ports"])

    pools = _setup_pools()
    runs_mount = f"runs:{IMAGE_REPO}/runs"
    for name, pool in (("worker-cpu", "distill-cpu"), ("worker-gpu", "distill-gpu")):
        worker = services[name]
        cmd = worker["command"]
        assert cmd[:3] == ["prefect", "worker", "start"] and "--with-healthcheck" in cmd
        assert cmd[cmd.index("--pool") + 1] == pool and pools[pool][0] == cmd[cmd.index("--type") + 1]
        # Both workers see the same run folders, where the GPU run leaves the model for the CPU flow.
        assert runs_mount in worker["volumes"], name
        assert worker["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["TORCH_VARIANT"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["init"]["command"] == [
        "bash",
        "-c",
        "bash deployments/setup.sh && prefect --no-prompt deploy --all",
    ]


def test_dockerfile_pins_torch_and_the_image_layout() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (pinned,) = re.findall(r'"torch==([0-9.]+)"', pyproject)
    assert f"ARG TORCH_VERSION={pinned}" in dockerfile
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M)
    assert f"WORKDIR {IMAGE_REPO}" in dockerfile
    for line in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert line == "." or (ROOT / line).exists(), line


# -- prefect.yaml ----------------------------------------------------------------------------------------
def test_prefect_yaml_entrypoints_pools_and_parameters() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from distiller.config import DistillConfig

    spec = _prefect_yaml()
    pools = _setup_pools()
    seen: set[str] = set()
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
        ident = f"{flow.name}/{dep['name']}"
        assert ident not in seen, f"two deployments named {ident}"
        seen.add(ident)
        assert dep["work_pool"]["name"] in pools, ident  # deployments/setup.sh creates it
        params = dep.get("parameters", {})
        if "config" in params:
            DistillConfig.model_validate(params["config"])
        if "config_path" in params:
            from distiller.config import load_config

            load_config(ROOT / params["config_path"])
        if dep.get("pull"):  # container deployments run the code baked into the image
            (step,) = dep["pull"]
            assert step["prefect.deployments.steps.set_working_directory"]["directory"] == IMAGE_REPO
    # What the rest of the project names: the flow's training.deployment target and the nightly schedule.
    assert {"distill/cpu", "distill/dask", "distill-train/gpu", "distill-from-file/nightly"} <= seen
    for stage in ("ingest", "generate", "iteration", "evaluate", "export", "report"):
        assert f"distill-{stage}/cpu" in seen
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    # The default pull step runs the flows from the clone `prefect deploy` was run in.
    (build,) = spec["build"]
    assert build["prefect.deployments.steps.run_shell_script"]["script"] == "pwd"
    (pull,) = spec["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ clone.stdout }}"


@pytest.mark.parametrize("template", sorted(p.stem for p in POOLS_DIR.glob("*.json")))
def test_base_job_templates_declare_what_they_use(template: str) -> None:
    from prefect.utilities.templating import find_placeholders

    data = json.loads((POOLS_DIR / f"{template}.json").read_text(encoding="utf-8"))
    declared = set(data["variables"]["properties"])
    used = {p.name for p in find_placeholders(data["job_configuration"])}
    assert used <= declared, used - declared
    assert template in {t for _, t in _setup_pools().values()}, f"{template}.json is not used by setup.sh"


def test_setup_script_refuses_without_a_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PREFECT_HOME=str(tmp_path))
    proc = subprocess.run(["bash", str(SETUP_SH)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "PREFECT_API_URL" in proc.stderr


# -- scale-out: the Dask task runner -----------------------------------------------------------------------
def test_task_runner_for_follows_the_config() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from distiller.config import DistillConfig
    from flows.stages import task_runner_for

    assert isinstance(task_runner_for(DistillConfig()), ThreadPoolTaskRunner)
    local = task_runner_for(DistillConfig(runner="dask"))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["processes"] is True
    remote = task_runner_for(DistillConfig(runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"


def test_local_cluster_workers_start_without_dasks_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask
    from distributed import Client

    from distiller.config import DistillConfig
    from flows.stages import local_cluster, task_runner_for

    assert task_runner_for(DistillConfig(runner="dask")).cluster_class is local_cluster
    key = "distributed.nanny.pre-spawn-environ"
    before = dict(dask.config.get(key))
    assert "MALLOC_TRIM_THRESHOLD_" in before  # Dask's own default, which our workers must not get
    # as a cluster started earlier with Dask's defaults leaves it in this process's environment
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(before["MALLOC_TRIM_THRESHOLD_"]))
    with (
        local_cluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        env = next(iter(client.run(lambda: dict(os.environ)).values()))
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == "1"  # the thread caps stay
    assert dict(dask.config.get(key)) == before  # changed only while the worker started
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(before["MALLOC_TRIM_THRESHOLD_"])


@pytest.mark.slow
def test_stages_run_on_a_two_worker_dask_cluster(tiny_corpus: Path, tmp_path: Path) -> None:
    """ingest and generate of the tiny config, submitted by `on_runner` to a local cluster of two worker
    processes reached through `dask_address`: they run in the workers and write the run folder."""
    from distributed import Client, LocalCluster, get_task_stream
    from prefect import flow

    from distiller.config import load_config
    from flows.stages import on_runner, with_runner
    from tasks.stages import generate_task, ingest_task

    @flow(name="dask-two-stages")
    def two_stages(config: Any) -> list[str]:
        return [on_runner(ingest_task, config).status, on_runner(generate_task, config).status]

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        cfg = load_config(
            None,
            tiny_overrides(
                tiny_corpus, tmp_path / "runs", runner="dask", dask_address=cluster.scheduler_address
            ),
        )
        with get_task_stream(client) as stream:
            statuses = with_runner(two_stages, cfg)(config=cfg)
        workers = set(cluster.scheduler_info["workers"])
    assert len(workers) == 2
    assert statuses == ["completed", "completed"]
    # Dask keys are `<task function>-<id>`; each stage ran in one of the two worker processes.
    ran_on = {entry["key"].split("-")[0]: entry["worker"] for entry in stream.data}
    assert {"ingest_task", "generate_task"} <= set(ran_on), ran_on
    assert {ran_on["ingest_task"], ran_on["generate_task"]} <= workers
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "chunks.parquet").is_file() and (run_dir / "queries.parquet").is_file()
