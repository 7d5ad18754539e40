"""Run folders and the stage cache mirrored at an fsspec URL (config `storage_url`), so workers on
different machines share them without a shared mount: `s3://bucket/prefix` (S3, MinIO), `file:///mnt/x`,
or any filesystem fsspec knows.

Each worker keeps working on a local copy under `runs_dir`; the mirror holds `<url>/<run_name>/` and
`<url>/.cache/`. Opening a run (`stages.open_store`) pulls the run folder; a stage served from the cache
fetches its entry when only the mirror has it; every stage pushes its outputs, its cache entry and the
manifest when it ends. A stage's files are only written while it runs, so pulling at its start and
pushing at its end is all the coordination a chain of stages on different machines needs.

Not mirrored: the LLM call cache (a SQLite file each machine keeps for itself; a finished LLM stage is
served from the stage cache anyway) and training checkpoints, so a stage killed half-way resumes only
on the machine that ran it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import ConfigError
from distiller.store import RunStore, StageCache, atomic_write_text, sha256_file

SYNC_STATE = ".remote-sync.json"
"""In the local run folder: per file, the mirror's version of it and the local file as last synced."""


def _version(info: dict[str, Any]) -> str:
    """What changes when the mirror's copy of a file is rewritten: its size and ETag (else mtime)."""
    keys = ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated")
    tag = next((info[k] for k in keys if info.get(k) is not None), "")
    return f"{info.get('size')}:{tag}"


def _local(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def _unchanged(path: Path, rec: dict[str, Any]) -> bool:
    """Whether the local file still has the contents it had when last synced. A restore from the stage
    cache replaces it with a hard link of another mtime, so equal sizes fall back to the hash."""
    st = path.stat()
    if st.st_size != rec.get("size"):
        return False
    return st.st_mtime_ns == rec.get("mtime_ns") or sha256_file(path) == rec.get("sha256")


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


class RemoteStorage:
    """The mirror of one run folder and of the stage cache (a `distiller.store.Mirror`)."""

    def __init__(self, url: str, options: dict[str, Any], run_dir: Path, cache_root: Path) -> None:
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as e:  # fsspec: a missing package, an unknown protocol
            raise ConfigError(
                f"storage_url {url!r}: {e} (s3:// needs the s3 extra: pip install 'domain-distiller[s3]')"
            ) from e
        root = root.rstrip("/")
        self.run_dir, self.cache_root = Path(run_dir), Path(cache_root)
        self.remote_run = f"{root}/{self.run_dir.name}"
        self.remote_cache = f"{root}/.cache"

    # -- paths and listings -------------------------------------------------------------------------
    def _remote(self, local: Path) -> str:
        for base, remote in ((self.run_dir, self.remote_run), (self.cache_root, self.remote_cache)):
            if local.is_relative_to(base):
                return f"{remote}/{local.relative_to(base).as_posix()}"
        raise ValueError(
            f"{local} is in neither the run folder {self.run_dir} nor the cache {self.cache_root}"
        )

    def _listing(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The files under `prefix` on the mirror: relative name -> fsspec info."""
        # Listings are cached per process (s3fs): another machine may have written since.
        self.fs.invalidate_cache()
        found = self.fs.find(prefix, detail=True)
        return {
            name[len(prefix) + 1 :]: info
            for name, info in found.items()
            if name.startswith(prefix + "/") and info.get("type", "file") == "file"
        }

    def _download(self, pairs: list[tuple[str, Path]]) -> None:
        """Fetch into temporary names, then rename: a local file may be a hard link into the stage cache,
        which writing through it would corrupt, and a cut-off download never passes for a whole file."""
        if not pairs:
            return
        tmps = [p.with_name(f".{p.name}.{os.getpid()}.pull") for _, p in pairs]
        for t in tmps:
            t.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get([r for r, _ in pairs], [str(t) for t in tmps])
            for t, (_, p) in zip(tmps, pairs, strict=True):
                if p.is_dir():
                    shutil.rmtree(p)
                t.replace(p)
        finally:
            for t in tmps:
                t.unlink(missing_ok=True)

    def _upload(self, pairs: list[tuple[Path, str]]) -> None:
        # put reads each file's bytes, so a hard-linked cache file lands on the mirror as a plain file.
        if not pairs:
            return
        for parent in {r.rsplit("/", 1)[0] for _, r in pairs}:
            self.fs.makedirs(parent, exist_ok=True)
        self.fs.put([str(p) for p, _ in pairs], [r for _, r in pairs])

    def _state(self) -> dict[str, dict[str, Any]]:
        p = self.run_dir / SYNC_STATE
        with contextlib.suppress(FileNotFoundError, ValueError):
            return json.loads(p.read_text(encoding="utf-8"))
        return {}

    def _save_state(self, state: dict[str, dict[str, Any]]) -> None:
        atomic_write_text(self.run_dir / SYNC_STATE, json.dumps(state, indent=1, sort_keys=True))

    # -- pull ---------------------------------------------------------------------------------------
    def pull_run(self, only: str | None = None) -> None:
        """Make the local run folder the mirror's: fetch the files missing here and those the mirror has
        rewritten since they were last synced (validate rewrites qa_pairs.parquet in place, a changed
        config rewrites a stage's outputs), and always the manifest. Files only this machine wrote stay.
        `only`: just the files under this folder of the run (e.g. "models/iter1/"), manifest left out."""
        state, adopted = self._state(), False
        todo: list[tuple[str, str]] = []
        for rel, info in self._listing(self.remote_run).items():
            if only is not None and not rel.startswith(only):
                continue
            local, rec, version = self.run_dir / rel, state.get(rel), _version(info)
            if rel == RunStore.MANIFEST or not local.is_file():
                todo.append((rel, version))
            elif rec is None:
                # Never synced (a folder from before storage_url was set): equal sizes pass for the same file.
                if local.stat().st_size != info.get("size"):
                    todo.append((rel, version))
                else:
                    state[rel], adopted = {"remote": version, **_local(local)}, True
            elif rec["remote"] != version:
                todo.append((rel, version))
        self._download([(f"{self.remote_run}/{rel}", self.run_dir / rel) for rel, _ in todo])
        for rel, version in todo:
            if rel != RunStore.MANIFEST:  # always fetched, never compared
                state[rel] = {"remote": version, **_local(self.run_dir / rel)}
        if adopted or any(rel != RunStore.MANIFEST for rel, _ in todo):
            self._save_state(state)

    def fetch_entry(self, entry: Path) -> bool:
        """Copy a stage-cache entry from the mirror if it is there whole (its result.json is written last),
        into place by one rename, as `StageCache.put` does."""
        if (entry / StageCache.RESULT).is_file():
            return True
        remote = self._remote(entry)
        files = self._listing(remote)
        if StageCache.RESULT not in files:
            return False
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.pull")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._download([(f"{remote}/{rel}", tmp / rel) for rel in files])
            if entry.exists():
                shutil.rmtree(entry)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    # -- push ---------------------------------------------------------------------------------------
    def push(self, paths: Iterable[Path]) -> None:
        """Upload run-folder files and folders (only what the mirror lacks or has another version of;
        files the mirror holds under a pushed folder but the folder no longer has are removed), then
        cache entries (skipped when the mirror has them: entries never change), then the manifest."""
        paths = [Path(p) for p in paths]
        for p in paths:
            self._remote(p)  # refuses a path in neither place
        manifest = self.run_dir / RunStore.MANIFEST
        run_paths = [p for p in paths if p != manifest and p.is_relative_to(self.run_dir)]
        entries = [p for p in paths if not p.is_relative_to(self.run_dir)]
        if run_paths:
            self._push_run(run_paths)
        if entries:
            self.fs.invalidate_cache()  # a listing cached before another machine wrote the entry
        for entry in entries:
            remote = self._remote(entry)
            if self.fs.exists(f"{remote}/{StageCache.RESULT}"):
                continue
            # result.json after the rest (put may send a batch in parallel): it is what makes the entry
            # count as whole on the mirror.
            result = entry / StageCache.RESULT
            self._upload([(f, self._remote(f)) for f in _files(entry) if f != result])
            self._upload([(result, self._remote(result))])
        if manifest in paths:
            self._upload([(manifest, self._remote(manifest))])

    def _push_run(self, paths: list[Path]) -> None:
        state, listing = self._state(), self._listing(self.remote_run)
        sent: list[tuple[str, dict[str, Any]]] = []
        stale: list[str] = []
        for path in paths:
            files = _files(path)
            for f in files:
                rel = f.relative_to(self.run_dir).as_posix()
                rec, info = state.get(rel), listing.get(rel)
                if rec and info and _version(info) == rec["remote"] and _unchanged(f, rec):
                    continue
                sent.append((rel, _local(f)))
            if path.is_dir():
                top = path.relative_to(self.run_dir).as_posix() + "/"
                have = {f.relative_to(self.run_dir).as_posix() for f in files}
                stale += [rel for rel in listing if rel.startswith(top) and rel not in have]
        self._upload([(self.run_dir / rel, f"{self.remote_run}/{rel}") for rel, _ in sent])
        if stale:
            self.fs.rm([f"{self.remote_run}/{rel}" for rel in stale])
        if sent or stale:
            after = self._listing(self.remote_run)
            for rel, local in sent:
                state[rel] = {"remote": _version(after[rel]), **local}
            for rel in stale:
                state.pop(rel, None)
            self._save_state(state)


def remote_for(cfg: DistillConfig, run_name: str | None = None) -> RemoteStorage | None:
    """The mirror of a run's folder, or None when `storage_url` is not set (nothing is contacted)."""
    if not cfg.storage_url:
        return None
    from distiller.llm.secrets import register_secret
    from distiller.naming import default_run_name

    # An error message of the object store's client may quote its credentials: masked like LLM keys.
    for name, value in cfg.storage_options.items():
        if isinstance(value, str) and any(w in name.lower() for w in ("key", "secret", "token", "password")):
            register_secret(value)

    run_dir = cfg.runs_path / (run_name or default_run_name(cfg))
    return RemoteStorage(cfg.storage_url, cfg.storage_options, run_dir, cfg.cache_path)


__all__ = ["SYNC_STATE", "RemoteStorage", "remote_for"]
