"""The run folder (the product's data contract) and the content-addressed stage cache.

`runs/<run-name>/` holds one run: `manifest.json`, one Parquet file per stage output, `models/`,
`exports/`, `report.html`. A stage's cache key is a hash of its name, its code version, the config
sections it reads and the *contents* of the artifacts it reads, never paths or timestamps. Finished
stage outputs are kept under `<cache>/stages/<stage>/<key>/` and hard-linked into any run folder that
asks for the same key, so a re-run, a resumed run, or a new run that shares upstream settings redoes
nothing that was done. With a `Mirror` (`distiller.remote`, config `storage_url`) both are also copied to
and from storage that workers on other machines see.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from distiller.errors import EnvironmentProblem, StageError, environment_error

StageStatus = Literal["pending", "running", "completed", "cached", "failed", "skipped"]


class StageResult(BaseModel):
    """What a stage did: the manifest's per-stage entry and what the Prefect task returns."""

    stage: str
    status: StageStatus
    key: str | None = None
    outputs: dict[str, int] = Field(default_factory=dict, description="artifact -> row count (-1: a folder)")
    seconds: float = 0.0
    cost_usd: float = 0.0
    message: str | None = None
    finished_at: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Mirror(Protocol):
    """Storage that run folders and cache entries are copied to and from (`distiller.remote`)."""

    def fetch_entry(self, entry: Path) -> bool:
        """Bring a cache entry folder here if the mirror has it whole; whether it is here now."""
        ...

    def push(self, paths: Iterable[Path]) -> None:
        """Upload files or folders of the run folder (the manifest among them) or cache entries."""
        ...

    def pull_run(self, only: str | None = None) -> None:
        """Bring the run folder (`only`: the files under this folder of it) up to date from the mirror."""
        ...


StageListener = Callable[[str, "StageResult"], None]
_LISTENERS: list[StageListener] = []


def add_stage_listener(fn: StageListener) -> None:
    """Be told (run name, result) whenever a stage starts, finishes, fails or is served from cache:
    the CLI prints live progress from this, whether the stages run under Prefect or not."""
    _LISTENERS.append(fn)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        # A full disk or a kill mid-write: leave no temp file behind for the user to find.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """Hash of a file, or of a folder's files (relative names and contents), independent of mtimes."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def stage_key(stage: str, version: str, config_hash: str, inputs: Iterable[Path | str]) -> str:
    h = hashlib.sha256(f"{stage}|{version}|{config_hash}".encode())
    for item in inputs:
        h.update(b"|")
        h.update(sha256_path(item).encode() if isinstance(item, Path) else str(item).encode())
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in (
        "domain-distiller",
        "torch",
        "sentence-transformers",
        "transformers",
        "prefect",
        "faiss-cpu",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst (a file or a folder tree); copy where links cannot be made."""
    _remove(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_file)
    else:
        _link_file(src, dst)


def _linked(src: Path, dst: Path) -> bool:
    """Whether dst already is src (a file or a folder tree): the same files, hard-linked, and no other."""
    if src.is_dir():
        if not dst.is_dir() or dst.is_symlink():
            return False
        names = {p.relative_to(src) for p in src.rglob("*")}
        if names != {p.relative_to(dst) for p in dst.rglob("*")}:
            return False
        return all((src / n).is_dir() or os.path.samefile(src / n, dst / n) for n in names)
    return dst.is_file() and not dst.is_symlink() and os.path.samefile(src, dst)


def _link_file(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class StageCache:
    """Finished stage outputs, addressed by stage key; shared by every run under the same cache dir."""

    RESULT = "result.json"

    def __init__(self, root: Path, mirror: Mirror | None = None) -> None:
        self.root = Path(root)
        self.mirror = mirror

    def entry(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / key

    def lookup(self, stage: str, key: str, outputs: Iterable[str] | None = None) -> StageResult | None:
        """The entry's result, or None. With `outputs`, an entry that lacks one of them (made by other
        code, or damaged by hand) is a miss: the stage runs again and replaces it."""
        entry = self.entry(stage, key)
        meta = entry / self.RESULT
        # Another machine may have made the entry: ask the mirror before calling it a miss.
        if not meta.is_file() and not (self.mirror and self.mirror.fetch_entry(meta.parent)):
            return None
        if outputs is not None and not all((entry / "files" / rel).exists() for rel in outputs):
            return None
        return StageResult.model_validate_json(meta.read_text(encoding="utf-8"))

    def put(self, result: StageResult, run_dir: Path, outputs: Iterable[str]) -> None:
        """Keep the stage's outputs under its key. The entry appears whole or not at all; when another
        run (same key, another run folder) put a whole entry first, ours is discarded, never mixed in."""
        assert result.key
        outputs = list(outputs)
        entry = self.entry(result.stage, result.key)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            for rel in outputs:
                _link_or_copy(run_dir / rel, tmp / "files" / rel)
            atomic_write_text(tmp / self.RESULT, result.model_dump_json(indent=2))
            if entry.exists() and self.lookup(result.stage, result.key, outputs) is not None:
                return  # lost the race to a whole entry: keep the winner (finally discards ours)
            if entry.exists():  # damaged: move it aside in one step, then drop it
                trash = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.old")
                with contextlib.suppress(FileNotFoundError):  # another run moved it first
                    entry.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(entry)  # the entry appears whole or not at all
            except OSError:
                if not entry.is_dir():  # not a lost race (the entry would be there now): a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def restore(self, stage: str, key: str, run_dir: Path, outputs: Iterable[str]) -> None:
        """Link the entry's copies of exactly `outputs` into the run folder. Only those paths are
        replaced: restoring `models/iter2` leaves `models/iter1` and `models/best` where they are. An
        output that already is the entry's (a rerun of a finished run) is left alone: deleting and
        linking it again would only open a window in which a kill leaves it half there."""
        files = self.entry(stage, key) / "files"
        for rel in outputs:
            if not _linked(files / rel, run_dir / rel):
                _link_or_copy(files / rel, run_dir / rel)


class RunStore:
    """One run folder and its manifest."""

    MANIFEST = "manifest.json"

    def __init__(
        self, run_dir: Path | str, cache: StageCache | None = None, mirror: Mirror | None = None
    ) -> None:
        self.dir = Path(run_dir)
        self.cache = cache or StageCache(self.dir.parent / ".cache", mirror)
        self.mirror = mirror
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        return self.dir.name

    def path(self, rel: str) -> Path:
        return self.dir / rel

    def has(self, rel: str) -> bool:
        return self.path(rel).exists()

    # -- manifest -----------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        p = self.dir / self.MANIFEST
        if not p.is_file():
            return {
                "run_name": self.name,
                "created_at": _now(),
                "stages": {},
                "skipped_inputs": [],
                "notes": [],
            }
        return json.loads(p.read_text(encoding="utf-8"))

    def update_manifest(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        m = self.manifest()
        fn(m)
        m["updated_at"] = _now()
        atomic_write_text(self.dir / self.MANIFEST, json.dumps(m, indent=2, sort_keys=False))
        if self.mirror:
            # Every write, not only a stage's last: a stage function may add to the manifest after
            # run_stage (ingest's skipped inputs, a skipped validate), and a failure is news too.
            self.mirror.push([self.dir / self.MANIFEST])
        return m

    def record_config(self, config_json: dict[str, Any]) -> None:
        def _set(m: dict[str, Any]) -> None:
            m["config"] = config_json
            m["versions"] = package_versions()

        self.update_manifest(_set)

    def record_stage(self, result: StageResult) -> None:
        def _set(m: dict[str, Any]) -> None:
            stages = m.setdefault("stages", {})
            stages[result.stage] = result.model_dump(mode="json")
            _costs_from_ledger(self.dir, m, result)

        self.update_manifest(_set)
        for fn in _LISTENERS:
            fn(self.name, result)

    def stage_results(self) -> dict[str, StageResult]:
        return {k: StageResult.model_validate(v) for k, v in self.manifest().get("stages", {}).items()}

    # -- running a stage ----------------------------------------------------------------------------
    def run_stage(
        self,
        stage: str,
        key: str,
        outputs: list[str],
        fn: Callable[[], StageResult | dict[str, Any] | None],
    ) -> StageResult:
        """Serve the stage from the cache if its key is known, else run `fn` (which writes `outputs`
        into the run folder) and remember the result under the key. A machine error (full disk,
        permissions, a name too long) comes out as one `EnvironmentProblem` line, wherever it struck."""
        try:
            return self._run_stage(stage, key, outputs, fn)
        except Exception as e:
            problem = environment_error(e)
            if problem:
                raise EnvironmentProblem(f"{stage}: {problem}") from e
            raise

    def _run_stage(
        self,
        stage: str,
        key: str,
        outputs: list[str],
        fn: Callable[[], StageResult | dict[str, Any] | None],
    ) -> StageResult:
        present = self._listed_outputs(exclude=stage)
        cached = self.cache.lookup(stage, key, outputs)
        if cached is not None:
            t0 = time.perf_counter()
            self.cache.restore(stage, key, self.dir, outputs)
            result = cached.model_copy(
                update={
                    "status": "cached",
                    "seconds": round(time.perf_counter() - t0, 3),
                    "cost_usd": 0.0,
                    "finished_at": _now(),
                    "details": {
                        **cached.details,
                        "first_run_seconds": cached.details.get("first_run_seconds", cached.seconds),
                        "first_run_cost_usd": cached.details.get("first_run_cost_usd", cached.cost_usd),
                    },
                }
            )
            self._check_outputs(stage, outputs, present)
            self._push(stage, key, outputs)
            self.record_stage(result)
            return result

        self.record_stage(StageResult(stage=stage, status="running", key=key))
        # Outputs may be hard links into the cache (from an earlier restore): remove them so the stage
        # writes new files and never overwrites a cached one in place.
        for rel in outputs:
            _remove(self.path(rel))
        t0 = time.perf_counter()
        try:
            produced = fn()
        except BaseException as e:
            problem = environment_error(e)
            failed = StageResult(
                stage=stage,
                status="failed",
                key=key,
                seconds=round(time.perf_counter() - t0, 3),
                message=problem or f"{type(e).__name__}: {e}",
                finished_at=_now(),
            )
            # On a full disk the manifest may not be writable either: the error that stopped the stage
            # is the one to report.
            with contextlib.suppress(OSError):
                self.record_stage(failed)
            raise
        if isinstance(produced, StageResult):
            result = produced
        else:
            result = StageResult(stage=stage, status="completed", **(produced or {}))
        result = result.model_copy(
            update={
                "stage": stage,
                "key": key,
                "status": result.status if result.status != "running" else "completed",
                "seconds": round(time.perf_counter() - t0, 3),
                "finished_at": _now(),
            }
        )
        if not result.outputs:
            result.outputs = {rel: _rows(self.path(rel)) for rel in outputs}
        self._check_outputs(stage, outputs, present)
        if result.status == "completed":
            self.cache.put(result, self.dir, outputs)
        self._push(stage, key, outputs)
        self.record_stage(result)
        return result

    def _listed_outputs(self, exclude: str) -> set[str]:
        """Outputs the manifest lists for finished stages other than `exclude` that are in the folder."""
        listed = {
            rel
            for name, r in self.stage_results().items()
            if name != exclude and r.status in ("completed", "cached")
            for rel in r.outputs
        }
        return {rel for rel in listed if self.has(rel)}

    def _check_outputs(self, stage: str, outputs: list[str], present: set[str]) -> None:
        """After a stage: its own outputs exist, and it removed none of the files other stages made."""
        lost = sorted(rel for rel in present if not self.has(rel))
        missing = [rel for rel in outputs if not self.has(rel)]
        if lost or missing:
            raise StageError(
                f"{stage} left the run folder incomplete in {self.dir}: "
                + "; ".join(
                    ([f"its outputs are missing: {', '.join(missing)}"] if missing else [])
                    + ([f"other stages' outputs were removed: {', '.join(lost)}"] if lost else [])
                )
                + " (a bug: please report it; running the command again restores them from the cache)"
            )

    def _push(self, stage: str, key: str, outputs: list[str]) -> None:
        # Before the manifest that names them (record_stage pushes it), so a machine that reads the
        # manifest finds the files and the cache entry there.
        if self.mirror:
            entry = self.cache.entry(stage, key)
            paths = [self.path(rel) for rel in outputs if self.has(rel)]
            self.mirror.push(paths + ([entry] if (entry / StageCache.RESULT).is_file() else []))


def _costs_from_ledger(run_dir: Path, m: dict[str, Any], result: StageResult) -> None:
    """Money has one source of truth, the run's LLM ledger: every stage's cost in the manifest (and the
    result handed on) is what the ledger holds for it, across kills and resumes, so they add up to its
    total; `llm_cost` keeps that total. A run with no ledger (no LLM) keeps what the stages said."""
    from distiller.llm.ledger import ledger_summary

    stages = m["stages"]
    summary = ledger_summary(run_dir, list(stages))
    if summary is None:
        return
    for name, entry in stages.items():
        entry["cost_usd"] = summary["by_stage"].get(name, 0.0)
    result.cost_usd = stages[result.stage]["cost_usd"]
    m["llm_cost"] = {**m.get("llm_cost", {}), **summary}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _rows(path: Path) -> int:
    if path.suffix == ".parquet" and path.is_file():
        from distiller.records import parquet_rows

        return parquet_rows(path)
    return -1


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - t0
