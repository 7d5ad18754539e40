"""Ingest: files, folders and globs in; documents, chunks and a list of what was skipped out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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


def ingest(
    cfg: DistillConfig,
    chunker: Chunker | None = None,
    on_file: Callable[[str], None] | None = None,
) -> IngestResult:
    """Read and chunk every input. Bad files are listed in `skipped` with the reason; the rest go on.
    Raises NoInputError only when nothing at all could be used."""
    paths, skipped = expand_inputs(cfg.input.paths)
    chunker = chunker or chunker_for(cfg)
    out = IngestResult(skipped=skipped)
    seen: dict[str, str] = {}
    for item in read_documents(
        paths, cfg.input.encoding, cfg.input.jsonl_text_field, cfg.input.jsonl_id_field
    ):
        if isinstance(item, SkippedInput):
            out.skipped.append(item)
            continue
        if on_file:
            on_file(item.key or item.source_path)
        doc: RawDocument = item
        if doc.doc_id in seen:
            out.duplicates += 1
            out.skipped.append(
                SkippedInput(
                    path=doc.key or doc.source_path, reason=f"duplicate of {seen[doc.doc_id]} (same text)"
                )
            )
            continue
        seen[doc.doc_id] = doc.key or doc.source_path
        chunks, dropped = chunker(doc)
        out.short_chunks_dropped += dropped
        out.documents.append(
            Document(
                doc_id=doc.doc_id,
                source_path=doc.key or doc.source_path,
                format=doc.format,
                n_chars=len(doc.text),
                title=doc.title,
            )
        )
        out.chunks.extend(chunks)
    if not out.chunks:
        reasons = "\n".join(
            f"  {s.path}{f':{s.line}' if s.line else ''}: {s.reason}" for s in out.skipped[:20]
        )
        raise NoInputError(f"no usable text in the inputs ({len(paths)} file(s)):\n{reasons}")
    return out


__all__ = ["IngestResult", "RawDocument", "expand_inputs", "ingest", "read_documents"]
