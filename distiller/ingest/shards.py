"""Ingest in shards: the input files in groups (`input.files_per_shard`), each group read and chunked
on its own (a Prefect task in the flow, mapped over Dask workers) into a part folder of the run, then
merged in input order (`distiller.ingest.merge`), which gives the same documents and chunks as reading
every file in one go.

A group's part is keyed by what decides it: the reading and chunking settings, the tokenizer, and each
file's path and content. Files keep their group from run to run (`ShardGroups`), so files added to a
corpus are read in new groups, an edited file re-reads its own group only, and a killed ingest resumes
at the first group without a part. A part is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from distiller.config import DistillConfig
from distiller.ingest import FileRead, ReadDocument, read_files
from distiller.records import Chunk, Document, SkippedInput, read_parquet, write_parquet

PART_FILES = ("documents.parquet", "chunks.parquet", "meta.json")


class IngestShard(BaseModel):
    """One group of input files to read and chunk: all a worker needs."""

    model_config = ConfigDict(frozen=True)

    index: int
    key: str
    out: str
    """The part's folder."""
    paths: list[str]
    config: DistillConfig

    @property
    def done(self) -> bool:
        return (Path(self.out) / "meta.json").is_file()

    @property
    def cost(self) -> int:
        """What reading it takes: its files' bytes (a file gone since planning counts nothing; its
        shard reports it)."""
        total = 0
        for p in self.paths:
            with contextlib.suppress(OSError):
                total += Path(p).stat().st_size
        return total


class IngestDone(BaseModel):
    """What reading one group did (a task's result: small)."""

    index: int
    files: int
    documents: int
    cached: bool
    seconds: float


def part_key(paths: list[str], hashes: dict[str, str], settings: str) -> str:
    h = hashlib.sha256(settings.encode())
    for p in paths:
        h.update(f"\x00{p}\x00{hashes[p]}".encode())
    return h.hexdigest()[:24]


def _save(reads: list[FileRead], out: Path) -> None:
    tmp = out.with_name(f"{out.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    docs: list[Document] = []
    chunks: list[Chunk] = []
    files: list[dict[str, Any]] = []
    for read in reads:
        items: list[dict[str, Any]] = []
        for item in read.items:
            if isinstance(item, SkippedInput):
                items.append({"skip": item.model_dump()})
            else:
                docs.append(item.document)
                chunks.extend(item.chunks)
                items.append({"chunks": len(item.chunks), "dropped": item.dropped})
        files.append({"path": read.path, "items": items})
    try:
        write_parquet(tmp / "documents.parquet", docs, Document)
        write_parquet(tmp / "chunks.parquet", chunks, Chunk)
        (tmp / "meta.json").write_text(json.dumps({"files": files}), encoding="utf-8")
        try:
            os.replace(tmp, out)
        except OSError:  # another worker put the same part in place first: same content
            if not (out / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_part(out: Path) -> list[FileRead]:
    """A part folder back as the files' reads, in the order they were read."""
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    docs = iter(read_parquet(out / "documents.parquet", Document))
    chunks = read_parquet(out / "chunks.parquet", Chunk)
    at = 0
    reads = []
    for f in meta["files"]:
        read = FileRead(f["path"])
        for item in f["items"]:
            if "skip" in item:
                read.items.append(SkippedInput.model_validate(item["skip"]))
            else:
                n = item["chunks"]
                read.items.append(ReadDocument(next(docs), chunks[at : at + n], item["dropped"]))
                at += n
        reads.append(read)
    return reads


def ingest_shard(spec: IngestShard, on_file: Callable[[str], None] | None = None) -> IngestDone:
    """Read and chunk one group of files into its part folder, or report it there already."""
    t0 = time.perf_counter()
    out = Path(spec.out)
    if spec.done:
        return IngestDone(index=spec.index, files=len(spec.paths), documents=0, cached=True, seconds=0.0)
    reads = read_files([Path(p) for p in spec.paths], spec.config, on_file=on_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(reads, out)
    return IngestDone(
        index=spec.index,
        files=len(spec.paths),
        documents=sum(isinstance(i, ReadDocument) for r in reads for i in r.items),
        cached=False,
        seconds=round(time.perf_counter() - t0, 3),
    )


def remove_torn(folder: Path) -> None:
    """Part folders a kill left half written (never read: only a renamed part counts)."""
    for torn in folder.glob("*.part-*") if folder.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(torn)


__all__ = ["IngestDone", "IngestShard", "ingest_shard", "load_part", "part_key", "remove_torn"]
