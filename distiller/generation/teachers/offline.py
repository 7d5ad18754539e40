"""The offline teacher: inverse-cloze pseudo-queries (Lee et al. 2019, "Latent Retrieval for Weakly
Supervised Open Domain Question Answering", ICT). A sentence of a chunk becomes the query and the chunk
*without* that sentence becomes its positive, so retrieval cannot succeed by copying words verbatim.

Deterministic for a seed: the sentence picked in a chunk depends only on (seed, chunk id)."""

from __future__ import annotations

import random
from functools import lru_cache

import pysbd

from distiller.generation.teachers.base import GenerationOutput, document_splits
from distiller.records import Chunk, Passage, QAPair, Query

TEACHER = "offline-ict"
PYSBD_LANGUAGES = {"en", "de", "es", "fr", "it", "nl", "ru", "pl", "da", "el", "ja", "zh", "ar", "hi", "fa"}


@lru_cache(maxsize=8)
def _segmenter(language: str) -> pysbd.Segmenter:
    return pysbd.Segmenter(
        language=language if language in PYSBD_LANGUAGES else "en", clean=False, char_span=True
    )


def sentence_spans(text: str, language: str = "en") -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in _segmenter(language).segment(text)]


def _tidy(text: str) -> str:
    return " ".join(text.split())


def inverse_cloze(
    chunks: list[Chunk],
    queries_per_chunk: int,
    min_words: int,
    train_ratio: float,
    val_ratio: float,
    seed: int,
    language: str = "en",
    *,
    document_positives: bool = False,
    titles: dict[str, str] | None = None,
) -> GenerationOutput:
    """`document_positives`: every chunk of the sentence's document is a positive (so no chunk of the
    same document is mined as its negative). `titles` ({doc_id: title}): each titled document's title
    is one more query, every chunk of the document its positive."""
    splits = document_splits(chunks, train_ratio, val_ratio, seed)
    passages: list[Passage] = []
    queries: list[Query] = []
    qa_pairs: list[QAPair] = []
    without_query = 0
    for chunk in chunks:
        spans = sentence_spans(chunk.text, language)
        candidates = [(s, e) for s, e in spans if len(chunk.text[s:e].split()) >= min_words]
        # A chunk of one sentence has nothing left to be its positive.
        if len(spans) < 2 or not candidates:
            passages.append(
                Passage(
                    passage_id=chunk.chunk_id, doc_id=chunk.doc_id, chunk_id=chunk.chunk_id, text=chunk.text
                )
            )
            without_query += 1
            continue
        rng = random.Random(f"{seed}:{chunk.chunk_id}")
        picked = sorted(rng.sample(candidates, k=min(queries_per_chunk, len(candidates), len(spans) - 1)))
        kept, cursor = [], 0
        for s, e in picked:
            kept.append(chunk.text[cursor:s])
            cursor = e
        kept.append(chunk.text[cursor:])
        positive = _tidy(" ".join(kept))
        passages.append(
            Passage(passage_id=chunk.chunk_id, doc_id=chunk.doc_id, chunk_id=chunk.chunk_id, text=positive)
        )
        split = splits[chunk.doc_id]
        for i, (s, e) in enumerate(picked):
            sentence = _tidy(chunk.text[s:e])
            qid = f"{chunk.chunk_id}-q{i}"
            queries.append(
                Query(
                    query_id=qid,
                    text=sentence,
                    positive_ids=[chunk.chunk_id],
                    doc_id=chunk.doc_id,
                    chunk_id=chunk.chunk_id,
                    split=split,
                    teacher=TEACHER,
                    language=language,
                    query_type="inverse-cloze",
                )
            )
            qa_pairs.append(
                QAPair(
                    qa_id=qid,
                    question=sentence,
                    answer=positive,
                    reasoning="inverse cloze: the sentence was cut from this passage",
                    source_chunk=chunk.chunk_id,
                    doc_id=chunk.doc_id,
                    split=split,
                    teacher=TEACHER,
                )
            )
    n_titles = 0
    fallback_note = ""
    train_docs = {d for d, split in splits.items() if split == "train"}
    if document_positives and len(train_docs) < 2:
        # Mining draws negatives from other training documents only: with one there would be none,
        # and an iteration without triplets stops the run.
        document_positives = False
        fallback_note = (
            f"document positives need two training documents (this run has {len(train_docs)}): "
            "each chunk is its own query's positive"
        )
    if document_positives or titles:
        of_doc: dict[str, list[str]] = {}
        for c in chunks:
            of_doc.setdefault(c.doc_id, []).append(c.chunk_id)
        if document_positives:
            queries = [q.model_copy(update={"positive_ids": of_doc[q.doc_id]}) for q in queries]
        for doc_id, title in (titles or {}).items():
            if doc_id in of_doc and len(title.split()) >= 2:
                queries.append(
                    Query(
                        query_id=f"{doc_id}-title",
                        text=_tidy(title),
                        positive_ids=of_doc[doc_id],
                        doc_id=doc_id,
                        split=splits[doc_id],
                        teacher=TEACHER,
                        language=language,
                        query_type="title",
                    )
                )
                n_titles += 1
    return GenerationOutput(
        passages=passages,
        queries=queries,
        qa_pairs=qa_pairs,
        notes=[
            "No LLM configured: the offline teacher made inverse-cloze pseudo-queries "
            "(a sentence of each chunk as the query, the rest of the chunk as its positive"
            + (", and every other chunk of its document" if document_positives else "")
            + (f"; {n_titles} document titles as queries too" if titles else "")
            + "). They are not real questions: measure on real ones with --eval-file. "
            "For real questions and Q&A pairs set "
            "teacher.provider (openai | anthropic) and teacher.model, e.g. "
            "`distill run --teacher openai --model gpt-4o-mini` with OPENAI_API_KEY set, or "
            "`--teacher openai --base-url http://localhost:8000/v1` for vLLM/Ollama."
        ]
        + ([fallback_note] if fallback_note else []),
        stats={"chunks_without_query": without_query, "queries": len(queries), "title_queries": n_titles},
    )
