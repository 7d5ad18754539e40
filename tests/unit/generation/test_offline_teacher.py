from __future__ import annotations

from pathlib import Path

from distiller.config import load_config
from distiller.generation.teachers.offline import inverse_cloze
from distiller.ingest import ingest


def _chunks(corpus: Path):
    cfg = load_config(overrides={"input": {"paths": [str(corpus)]}, "chunking": {"chunk_size": 96}})
    return ingest(cfg).chunks


def test_inverse_cloze_is_deterministic_and_removes_the_query(tiny_corpus: Path) -> None:
    chunks = _chunks(tiny_corpus)
    a = inverse_cloze(chunks, 1, 5, 0.7, 0.1, seed=3)
    b = inverse_cloze(chunks, 1, 5, 0.7, 0.1, seed=3)
    c = inverse_cloze(chunks, 1, 5, 0.7, 0.1, seed=4)
    assert [q.model_dump() for q in a.queries] == [q.model_dump() for q in b.queries]
    assert [q.text for q in a.queries] != [q.text for q in c.queries]
    passages = {p.passage_id: p for p in a.passages}
    assert len(passages) == len(chunks)  # every chunk is in the corpus, with or without a query
    for q in a.queries:
        assert len(q.text.split()) >= 5
        positive = passages[q.positive_ids[0]].text
        assert q.text not in positive  # the query sentence was cut out of its positive
        assert positive  # and something is left
    assert "No LLM configured" in a.notes[0]


def test_split_is_by_document(tiny_corpus: Path) -> None:
    chunks = _chunks(tiny_corpus)
    out = inverse_cloze(chunks, 2, 5, 0.6, 0.2, seed=1)
    split_of_doc: dict[str, set[str]] = {}
    for q in out.queries:
        split_of_doc.setdefault(q.doc_id, set()).add(q.split)
    assert all(len(s) == 1 for s in split_of_doc.values())
    assert {s for v in split_of_doc.values() for s in v} == {"train", "val", "test"}
    for qa in out.qa_pairs:
        assert qa.split == next(iter(split_of_doc[qa.doc_id]))


def test_document_positives_and_title_queries(tiny_corpus: Path) -> None:
    chunks = _chunks(tiny_corpus)
    of_doc: dict[str, list[str]] = {}
    for c in chunks:
        of_doc.setdefault(c.doc_id, []).append(c.chunk_id)
    titled = next(d for d, ids in of_doc.items() if len(ids) > 1)
    plain = inverse_cloze(chunks, 1, 5, 0.7, 0.1, seed=3)
    out = inverse_cloze(
        chunks,
        1,
        5,
        0.7,
        0.1,
        seed=3,
        document_positives=True,
        titles={titled: "Aicardi syndrome", "x": "y z"},
    )
    ict = [q for q in out.queries if q.query_type == "inverse-cloze"]
    assert [q.text for q in ict] == [q.text for q in plain.queries]  # the same sentences
    assert all(q.positive_ids == of_doc[q.doc_id] for q in ict)  # every chunk of the document
    assert all(q.positive_ids == [q.chunk_id] for q in plain.queries)  # the default of the function
    titles = [q for q in out.queries if q.query_type == "title"]
    assert [(q.text, q.positive_ids, q.teacher) for q in titles] == [
        ("Aicardi syndrome", of_doc[titled], "offline-ict")
    ]  # a title of a document this run does not have is ignored
    assert titles[0].split == next(q.split for q in ict if q.doc_id == titled)


def test_document_positives_need_two_training_documents(tiny_corpus: Path) -> None:
    chunks = _chunks(tiny_corpus)
    one_doc = [c for c in chunks if c.doc_id == chunks[0].doc_id]
    assert len(one_doc) > 1
    out = inverse_cloze(one_doc, 1, 5, 1.0, 0.0, seed=3, document_positives=True)
    # every chunk of the only document a positive would leave mining no negative at all
    assert out.queries and all(q.positive_ids == [q.chunk_id] for q in out.queries)
    assert any("two training documents (this run has 1)" in n for n in out.notes)
    both = inverse_cloze(chunks, 1, 5, 1.0, 0.0, seed=3, document_positives=True)
    assert len({c.doc_id for c in chunks}) >= 2
    assert any(len(q.positive_ids) > 1 for q in both.queries)
    assert not any("two training documents" in n for n in both.notes)


def test_offline_pseudo_queries_train_at_the_offline_learning_rate() -> None:
    from distiller.stages import training_settings

    def lr(**over: object) -> float:
        return training_settings(
            load_config(overrides={"training": {"learning_rate": 3e-5}, **over})
        ).learning_rate

    assert lr() == 5e-6  # offline teacher, documents
    assert lr(input={"qa_file": "faq.csv"}) == 3e-5  # labeled mode keeps its own
    assert lr(teacher={"provider": "openai"}) == 3e-5  # an LLM teacher too
    assert lr(training={"learning_rate": 3e-5, "offline_learning_rate": None}) == 3e-5
