"""Ingest: files, folders and globs in; documents, chunks and a list of what was skipped out.

Two steps, so that files can be read in groups (shards, `distiller.ingest.shards`) and the result is the
same however they were grouped: `read_files` reads and chunks each file on its own (`FileRead`: what
the file gave, in order), and `merge` replays the files in input order, dropping a document whose text
came earlier (first one wins) and raising NoInputError when nothing at all could be used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distiller.config import DistillConfig
from distiller.errors import NoInputError
from distiller.ingest.chunking import Chunker, chunker_for
from distiller.ingest.readers import RawDocument, expand_inputs, read_documents
from distiller.records import Chunk, Document, SkippedInput


@dataclass
class IngestResult:
    documents: list[Document] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    skipped: list[SkippedInput] = field(default_factory=list)
    short_chunks_dropped: int = 0
    duplicates: int = 0


@dataclass
class ReadDocument:
    """One document a file gave: its record, its chunks and how many short chunks were dropped."""

    document: Document
    chunks: list[Chunk]
    dropped: int


@dataclass
class FileRead:
    """What reading one input file gave, in order: documents and lines skipped (a .jsonl gives many)."""

    path: str
    items: list[ReadDocument | SkippedInput] = field(default_factory=list)


def read_files(
    paths: Sequence[Path],
    cfg: DistillConfig,
    chunker: Chunker | None = None,
    on_file: Callable[[str], None] | None = None,
) -> list[FileRead]:
    """Read and chunk each file on its own; `on_file` is told each document read."""
    chunker = chunker or chunker_for(cfg)
    out = []
    for path in paths:
        read = FileRead(str(path))
        for item in read_documents(
            [Path(path)], cfg.input.encoding, cfg.input.jsonl_text_field, cfg.input.jsonl_id_field
        ):
            if isinstance(item, SkippedInput):
                read.items.append(item)
                continue
            if on_file:
                on_file(item.key or item.source_path)
            doc: RawDocument = item
            chunks, dropped = chunker(doc)
            record = Document(
                doc_id=doc.doc_id,
                source_path=doc.key or doc.source_path,
                format=doc.format,
                n_chars=len(doc.text),
                title=doc.title,
            )
            read.items.append(ReadDocument(record, chunks, dropped))
        out.append(read)
    return out


def merge(reads: Sequence[FileRead], skipped: Sequence[SkippedInput] = ()) -> IngestResult:
    """The files' documents and chunks in the order of `reads` (the input order), a document whose text
    came earlier dropped as a duplicate; `skipped`: what expanding the inputs skipped."""
    out = IngestResult(skipped=list(skipped))
    seen: dict[str, str] = {}
    for read in reads:
        for item in read.items:
            if isinstance(item, SkippedInput):
                out.skipped.append(item)
                continue
            doc = item.document
            if doc.doc_id in seen:
                out.duplicates += 1
                out.skipped.append(
                    SkippedInput(path=doc.source_path, reason=f"duplicate of {seen[doc.doc_id]} (same text)")
                )
                continue
            seen[doc.doc_id] = doc.source_path
            out.short_chunks_dropped += item.dropped
            out.documents.append(doc)
            out.chunks.extend(item.chunks)
    if not out.chunks:
        reasons = "\n".join(
            f"  {s.path}{f':{s.line}' if s.line else ''}: {s.reason}" for s in out.skipped[:20]
        )
        raise NoInputError(f"no usable text in the inputs ({len(reads)} file(s)):\n{reasons}")
    return out


def ingest(
    cfg: DistillConfig,
    chunker: Chunker | None = None,
    on_file: Callable[[str], None] | None = None,
) -> IngestResult:
    """Read and chunk every input. Bad files are listed in `skipped` with the reason; the rest go on.
    Raises NoInputError only when nothing at all could be used."""
    paths, skipped = expand_inputs(cfg.input.paths)
    return merge(read_files(paths, cfg, chunker, on_file), skipped)


__all__ = [
    "FileRead",
    "IngestResult",
    "RawDocument",
    "ReadDocument",
    "expand_inputs",
    "ingest",
    "merge",
    "read_documents",
    "read_files",
]
