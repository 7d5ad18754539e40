"""The generate stage with an LLM teacher (the loopback server and a teacher that answers from the prompt):
document mode (queries and Q&A pairs per chunk, contrastive negatives as generated triplets) and bootstrap
mode (queries per concept, then documents that become the corpus); near-duplicates removed before money
is spent on them; garbage answers recorded as failed rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

from distiller.generation.plan import deal
from distiller.generation.progress import ProgressEvent, progress_sink
from distiller.prompts.documents import STRATEGIES
from distiller.records import Chunk, GeneratedDocument, Passage, QAPair, Query, Triplet, read_parquet
from distiller.stages import bootstrap_stage, generate_stage, ingest_stage, open_store
from distiller.testing.llm_server import LLMTestServer


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "docs")


def _read(store, name: str, model):
    return read_parquet(store.path(name), model)


def test_document_mode_writes_grounded_traceable_rows(
    llm_server: LLMTestServer, tmp_path: Path, corpus: Path
) -> None:
    teacher = ScriptedTeacher()
    llm_server.responder = teacher
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        input={"paths": [str(corpus)]},
        generation={
            "queries_per_chunk": 2,
            "questions_per_chunk": 2,
            "document_negatives": True,
            "negatives_per_query": 2,
            "template": "legal",
        },
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    events: list[ProgressEvent] = []
    with progress_sink(events.append):
        res = generate_stage(store, cfg)
    assert res.status == "completed"
    chunks = _read(store, "chunks.parquet", Chunk)
    by_chunk = {c.chunk_id: c for c in chunks}
    passages = _read(store, "passages.parquet", Passage)
    assert [(p.passage_id, p.text) for p in passages] == [(c.chunk_id, c.text) for c in chunks]

    queries = _read(store, "queries.parquet", Query)
    assert queries and all(q.positive_ids == [q.chunk_id] and q.chunk_id in by_chunk for q in queries)
    assert all(q.doc_id == by_chunk[q.chunk_id].doc_id and q.teacher == "test-model" for q in queries)
    assert all(q.complexity in ("simple", "intermediate", "complex") for q in queries)
    assert all(q.query_type and q.answer_type and q.key_concepts and q.language == "en" for q in queries)
    # every chunk's second query was the same text: one is kept, the rest counted as near-duplicates
    assert res.details["near_duplicates_removed"] == len(chunks) - 1
    assert f"{len(chunks) - 1} near-duplicate queries removed" in (res.message or "")
    assert sum("something everyone asks" in q.text for q in queries) == 1

    qa = _read(store, "qa_pairs.parquet", QAPair)
    assert len(qa) == 2 * len(chunks) and len({x.qa_id for x in qa}) == len(qa)
    for pair in qa:
        assert pair.source_chunk in by_chunk and pair.doc_id == by_chunk[pair.source_chunk].doc_id
        assert pair.reasoning and pair.difficulty and pair.validation == "unvalidated"
        # the scripted teacher answers with the first sentence of the passage it was shown
        assert pair.answer.rstrip(".") in by_chunk[pair.source_chunk].text

    # the prompt opened with the chunk itself and asked for the planned slots
    first = next(r for r in llm_server.requests if r.schema_name == "QueryBatch")
    assert first.first_user.startswith("Passage (from ") and "1. complexity:" in first.first_user
    assert any(c.text.strip()[:60] in first.first_user for c in chunks)

    docs = _read(store, "documents.parquet", GeneratedDocument)
    assert docs and all(d.role == "negative" and d.explanation and d.chunk_id for d in docs)
    # each query's negatives use different strategies, in turn from a start hashed from its id (a query's
    # plan never moves when other queries come: its answer stays in the call cache)
    assert {d.strategy for d in docs} <= set(STRATEGIES)
    per_query: dict[str, list[str]] = {}
    for d in docs:
        per_query.setdefault(d.query_id, []).append(d.strategy)
    assert all(len(set(v)) == len(v) == 2 for v in per_query.values())
    triplets = _read(store, "triplets_generated.parquet", Triplet)
    train = {q.query_id for q in queries if q.split == "train"}
    assert (
        triplets and {t.query_id for t in triplets} <= train and all(t.kind == "generated" for t in triplets)
    )
    assert all(t.positive == by_chunk[t.positive_id].text for t in triplets)

    finished = {e.step for e in events if e.finished}
    assert finished == {"queries", "Q&A pairs", "negatives"}
    assert all(e.stage == "generate" and e.budget_left_usd is not None for e in events)

    # Resumable at the call level too: with the stage cache gone, the stage runs again and every call is
    # answered from the call cache (what a run killed mid-stage does for the calls it had finished).
    import shutil

    shutil.rmtree(cfg.cache_path / "stages" / "generate")
    llm_server.reset()
    again = generate_stage(store, cfg)
    assert again.status == "completed" and llm_server.count == 0
    assert _read(store, "queries.parquet", Query) == queries


def test_document_mode_garbage_answers_are_failed_rows(
    llm_server: LLMTestServer, tmp_path: Path, corpus: Path
) -> None:
    teacher = ScriptedTeacher()
    teacher.bad = lambda req: (
        "wrong_schema"
        if req.schema_name == "QABatch" and "deposit.md" in req.first_user
        else "malformed"
        if req.schema_name == "QueryBatch" and "rent.md" in req.first_user
        else None
    )
    llm_server.responder = teacher
    cfg = llm_run_config(llm_server, tmp_path / "runs", input={"paths": [str(corpus)]})
    store = open_store(cfg)
    ingest_stage(store, cfg)
    res = generate_stage(store, cfg)
    assert res.status == "completed"
    chunks = _read(store, "chunks.parquet", Chunk)
    bad_q = {c.chunk_id for c in chunks if c.source_path.endswith("rent.md")}
    bad_qa = {c.chunk_id for c in chunks if c.source_path.endswith("deposit.md")}
    assert res.details["failed_requests"] == len(bad_q) + len(bad_qa)
    assert "requests failed (see ledger.parquet)" in (res.message or "")
    queries = _read(store, "queries.parquet", Query)
    assert queries and not {q.chunk_id for q in queries} & bad_q
    qa = _read(store, "qa_pairs.parquet", QAPair)
    assert qa and not {x.source_chunk for x in qa} & bad_qa


def test_bootstrap_mode_documents_make_the_corpus(llm_server: LLMTestServer, tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    llm_server.responder = teacher
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        generation={"domain": "legal", "concepts": 12, "concepts_per_call": 4, "negatives_per_query": 2},
    )
    store = open_store(cfg)
    bootstrap_stage(store, cfg)
    res = generate_stage(store, cfg)
    assert res.status == "completed"
    queries = _read(store, "queries.parquet", Query)
    docs = _read(store, "documents.parquet", GeneratedDocument)
    passages = {p.passage_id: p for p in _read(store, "passages.parquet", Passage)}
    by_id = {d.document_id: d for d in docs}
    assert set(passages) == set(by_id)  # the corpus is the generated documents
    # near-duplicates were removed before any document was paid for
    assert teacher.seen["DocumentSet"] == len(queries)
    assert res.details["near_duplicates_removed"] > 0
    for q in queries:
        assert q.concept_id and q.doc_id == q.concept_id and not q.chunk_id
        pos = [by_id[p] for p in q.positive_ids]
        assert pos and all(d.role == "positive" and d.query_id == q.query_id for d in pos)
        negs = [d for d in docs if d.query_id == q.query_id and d.role == "negative"]
        assert len(negs) == 2 and all(d.explanation and d.strategy in STRATEGIES for d in negs)
        assert {d.length for d in [*pos, *negs]} == {pos[0].length}  # one length per query: no shortcut
    negatives = [d for d in docs if d.role == "negative"]
    assert {d.strategy for d in negatives} <= set(STRATEGIES)
    # each query's length is dealt from the legal template's mix by its own id (plan.deal)
    share = {"short": 0.25, "medium": 0.5, "long": 0.25}
    for q in queries:
        assert by_id[q.positive_ids[0]].length == deal(share, 1, cfg.seed, "documents:length", q.query_id)[0]
    for q in queries:  # the asked-for words arrived (the scripted teacher keeps to them)
        lo = {"short": 40, "medium": 100, "long": 220}[by_id[q.positive_ids[0]].length]
        assert len(by_id[q.positive_ids[0]].text.split()) >= lo
    rel_queries = [q for q in queries if q.concept_id.startswith("r")]
    assert rel_queries and {q.query_type for q in rel_queries} <= {"comparative", "scenario"}

    qa = {x.qa_id: x for x in _read(store, "qa_pairs.parquet", QAPair)}
    assert set(qa) == {q.query_id for q in queries}
    assert all(qa[q.query_id].source_chunk == q.positive_ids[0] and qa[q.query_id].answer for q in queries)
    triplets = _read(store, "triplets_generated.parquet", Triplet)
    train = {q.query_id for q in queries if q.split == "train"}
    assert triplets and {t.query_id for t in triplets} == train
    assert all(by_id[t.negative_id].role == "negative" for t in triplets)
    # the document requests asked for enough output tokens for their length
    long_req = [
        r for r in llm_server.requests if r.schema_name == "DocumentSet" and "220-350" in r.first_user
    ]
    assert long_req and all(r.max_tokens > cfg.teacher.max_tokens for r in long_req)


def test_without_contrastive_negatives_are_plainly_related(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        generation={"domain": "finance", "concepts": 4, "contrastive": False, "relationships_per_call": 0},
    )
    store = open_store(cfg)
    bootstrap_stage(store, cfg)
    generate_stage(store, cfg)
    negatives = [d for d in _read(store, "documents.parquet", GeneratedDocument) if d.role == "negative"]
    assert negatives and {d.strategy for d in negatives} == {"related"}
    prompt = next(r for r in llm_server.requests if r.schema_name == "DocumentSet")
    assert "topical_shift" not in prompt.prompt and "- related:" in prompt.prompt


def test_generate_in_bootstrap_mode_needs_the_bootstrap_stage(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    from distiller.errors import StageError

    cfg = llm_run_config(llm_server, tmp_path / "runs", generation={"domain": "legal"})
    with pytest.raises(StageError, match=r"concepts\.parquet.*distill bootstrap"):
        generate_stage(open_store(cfg), cfg)


def test_a_negative_that_copies_its_positive_is_dropped(llm_server: LLMTestServer, tmp_path: Path) -> None:
    teacher = ScriptedTeacher()

    def copying(req):  # the first negative repeats the positive word for word (in other case)
        answer = teacher(req)
        if req.schema_name == "DocumentSet":
            answer["negatives"][0]["text"] = answer["positives"][0]["text"].upper()
        return answer

    llm_server.responder = copying
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        generation={"domain": "legal", "concepts": 4, "relationships_per_call": 0, "negatives_per_query": 2},
    )
    store = open_store(cfg)
    bootstrap_stage(store, cfg)
    res = generate_stage(store, cfg)
    queries = _read(store, "queries.parquet", Query)
    docs = _read(store, "documents.parquet", GeneratedDocument)
    assert res.details["negatives_copying_a_positive"] == len(queries)
    for q in queries:
        negs = [d for d in docs if d.query_id == q.query_id and d.role == "negative"]
        assert [d.document_id for d in negs] == [f"{q.query_id}-n1"]  # slot 0 was the copy


def test_added_documents_are_the_only_rows_asked_for_again(
    llm_server: LLMTestServer, tmp_path: Path, corpus: Path
) -> None:
    """A corpus that grows by a document pays for the new document's rows only: every old row's prompt
    (its planned slots, difficulties and strategies) is as it was, so its answer is in the call cache."""
    llm_server.responder = ScriptedTeacher()
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        input={"paths": [str(corpus)]},
        generation={"queries_per_chunk": 3, "questions_per_chunk": 2, "document_negatives": True},
        encoding={"shard_size": 6},
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    generate_stage(store, cfg)
    old_chunks = {c.chunk_id for c in _read(store, "chunks.parquet", Chunk)}
    sent_first = len(llm_server.requests)
    shard_files = set(store.path("shards").rglob("query-*.npy"))  # the near-duplicate check's encodings
    # a document whose name sorts before the others
    (corpus / "aaa-eviction.md").write_text(
        "# Eviction\n\n" + "An eviction needs a court order. The tenant may appeal within two weeks. " * 4,
        encoding="utf-8",
    )
    ingest_stage(store, cfg)
    res = generate_stage(store, cfg)
    new_chunks = {c.chunk_id for c in _read(store, "chunks.parquet", Chunk)} - old_chunks
    asked = llm_server.requests[sent_first:]
    assert new_chunks and asked
    # queries and Q&A pairs: one request per new chunk each; negatives: one per new query kept
    by_schema = Counter(r.schema_name for r in asked)
    assert by_schema["QueryBatch"] == by_schema["QABatch"] == len(new_chunks), by_schema
    new_queries = [q for q in _read(store, "queries.parquet", Query) if q.chunk_id in new_chunks]
    assert by_schema["NegativeSet"] == len(new_queries), by_schema
    assert all(any(c[:40] in r.first_user for c in _texts(store, new_chunks)) for r in asked)
    assert res.status == "completed"
    # the near-duplicate check encoded the new queries' shards (6 queries each) and at most one old one
    # (the newest, topped up), not every query again
    encoded = set(store.path("shards").rglob("query-*.npy")) - shard_files
    assert len(shard_files) >= 3 and 0 < len(encoded) <= -(-3 * len(new_chunks) // 6) + 1


def _texts(store, ids: set[str]) -> list[str]:
    return [c.text.strip() for c in _read(store, "chunks.parquet", Chunk) if c.chunk_id in ids]
