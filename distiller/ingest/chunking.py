"""Token-aware chunking with `semchunk`: it splits at the most semantic boundary that fits (paragraphs,
then lines, then sentence ends, then clauses, then words), so sentences stay whole wherever the
chunk size allows, and it reports each chunk's character span in the source text."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import semchunk

from distiller.config import DistillConfig
from distiller.ingest.readers import RawDocument
from distiller.records import Chunk


@lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str) -> Any:
    """A Hugging Face tokenizer by hub name or local path (the packaged student resolves offline)."""
    from transformers import AutoTokenizer

    from distiller.retrieval.models import resolve_student

    tokenizer = AutoTokenizer.from_pretrained(resolve_student(name_or_path))
    # Chunking counts the tokens of whole sections before it splits them: a section longer than the
    # model's window is expected here, not the error transformers warns of.
    tokenizer.model_max_length = 10**9
    return tokenizer


class Chunker:
    def __init__(self, tokenizer: Any, chunk_size: int, overlap: float, min_tokens: int = 1) -> None:
        self._tokenizer = tokenizer
        # semchunk counts tokens without special tokens: the budget is the text's own length.
        # Any: semchunk's chunker returns a union over its options (offsets, many texts at once).
        self._chunk: Any = semchunk.chunkerify(self.count_tokens, chunk_size)  # type: ignore[attr-defined]
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.min_tokens = min_tokens

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def split_text(self, text: str) -> list[str]:
        """`text` whole when it fits `chunk_size`, else its non-blank chunks (labeled mode's answers)."""
        if self.count_tokens(text) <= self.chunk_size:
            return [text]
        return [c for c in self._chunk(text, overlap=self.overlap or None) if c.strip()]

    def __call__(self, doc: RawDocument) -> tuple[list[Chunk], int]:
        """The document's chunks, and how many were dropped as shorter than `min_tokens`."""
        texts, spans = self._chunk(doc.text, offsets=True, overlap=self.overlap or None)
        chunks: list[Chunk] = []
        dropped = 0
        doc_id, source = doc.doc_id, doc.key or doc.source_path
        for text, (start, end) in zip(texts, spans, strict=True):
            n = self.count_tokens(text)
            if n < self.min_tokens:
                dropped += 1
                continue
            chunks.append(
                Chunk(
                    chunk_id=f"{doc_id}-{len(chunks):04d}",
                    doc_id=doc_id,
                    source_path=source,
                    chunk_index=len(chunks),
                    char_start=start,
                    char_end=end,
                    text=text,
                    n_tokens=n,
                )
            )
        return chunks, dropped


def make_chunker(tokenizer_name: str, chunk_size: int, overlap: float, min_tokens: int) -> Chunker:
    return Chunker(load_tokenizer(tokenizer_name), chunk_size, overlap, min_tokens)


def chunk_tokenizer(cfg: DistillConfig) -> str:
    """The tokenizer chunk sizes are counted in: `chunking.tokenizer`, else the student's."""
    return cfg.chunking.tokenizer or cfg.training.student


def chunker_for(cfg: DistillConfig) -> Chunker:
    """The chunker the `chunking` section describes."""
    c = cfg.chunking
    return make_chunker(chunk_tokenizer(cfg), c.chunk_size, c.overlap, c.min_tokens)


TokenCounter = Callable[[str], int]
