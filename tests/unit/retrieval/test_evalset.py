"""Real queries from the user (`--eval-file`): both forms load against the run's corpus, a bad file is one
clear error naming it, and the eval set (not the pseudo-queries) decides models/best, the base included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import distiller.retrieval.evaluation
import distiller.retrieval.models
import distiller.stages.evaluate
from distiller.config import DistillConfig
from distiller.errors import EvalFileError
from distiller.evalset import load_eval_file
from distiller.records import (
    OFFLINE_WARNING,
    QUERY_SET_LABELS,
    Chunk,
    Document,
    MetricRow,
    Passage,
    Query,
    read_parquet,
    write_parquet,
)
from distiller.report import render_report
from distiller.stages import evaluate_stage, open_store
from distiller.summary import runs_table, status_renderable, summary_markdown

TEXTS = {
    "A1": ["Aspirin lowers the risk of a second heart attack in adults.", "It thins the blood."],
    "B2": ["Vitamin D deficiency is common in northern winters.", "Sunlight makes vitamin D in skin."],
    "C3": ["Hendra virus spreads from fruit bats to horses and then to people."],
}


def corpus() -> tuple[list[Document], list[Chunk], list[Passage]]:
    """Three documents of a .jsonl with ids A1, B2, C3 (as ingest records them), their chunks, passages."""
    docs, chunks = [], []
    for n, (key, parts) in enumerate(TEXTS.items(), start=1):
        doc_id = f"h{n:015d}"
        docs.append(
            Document(doc_id=doc_id, source_path=f"/data/corpus.jsonl:{key}", format="jsonl", n_chars=9)
        )
        for i, text in enumerate(parts):
            chunks.append(
                Chunk(chunk_id=f"{doc_id}-{i}", doc_id=doc_id, source_path=docs[-1].source_path,
                      chunk_index=i, char_start=0, char_end=len(text), text=text, n_tokens=len(text.split()))
            )  # fmt: skip
    passages = [
        Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
    ]
    return docs, chunks, passages


def beir(folder: Path, qrels: str, queries: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    queries = queries or [
        {"_id": "q1", "text": "does aspirin prevent heart attacks"},
        {"_id": "q2", "text": "who lacks vitamin d in winter"},
    ]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_beir_folder_maps_corpus_ids_to_documents_and_scores_per_document(tmp_path: Path) -> None:
    docs, chunks, passages = corpus()
    folder = beir(
        tmp_path / "beir", "query-id\tcorpus-id\tscore\nq1\tA1\t1\nq2\tB2\t1\nq2\tZZ\t1\nq1\tC3\t0\n"
    )
    ev = load_eval_file(folder, docs, chunks, passages)
    assert ev.form == "beir"
    pos = {q.query_id: q.positive_ids for q in ev.queries}
    assert pos == {"q1": [docs[0].doc_id], "q2": [docs[1].doc_id]}  # score 0 is not relevant
    assert ev.unit_of == {c.chunk_id: c.doc_id for c in chunks}
    assert [p.text for p in ev.corpus] == [c.text for c in chunks]  # whole chunks, not ICT passages
    assert ev.notes == ["1 of 3 qrels name a corpus id this run does not have (left out)"]
    # the same through the queries.jsonl path, and by the document's content id
    (folder / "qrels" / "test.tsv").write_text(f"q1\t{docs[2].doc_id}\t1\n")
    ev2 = load_eval_file(folder / "queries.jsonl", docs, chunks, passages)
    assert [(q.query_id, q.positive_ids) for q in ev2.queries] == [("q1", [docs[2].doc_id])]


def test_document_scoring_ranks_a_document_at_its_best_chunk() -> None:
    run = {"q": ["d1-0", "d1-1", "d2-0", "d3-0"]}
    unit_of = {"d1-0": "d1", "d1-1": "d1", "d2-0": "d2", "d3-0": "d3"}
    assert distiller.retrieval.evaluation.collapse_run(run, unit_of, 2) == {"q": ["d1", "d2"]}


def test_question_answer_pairs_match_passages(tmp_path: Path) -> None:
    docs, chunks, passages = corpus()
    f = tmp_path / "qa.jsonl"
    f.write_text(
        json.dumps({"question": "What does aspirin do?", "answer": "it THINS the   blood"}) + "\n"
        + json.dumps({"question": "bats?",
                      "answer": "Hendra virus spreads from fruit bats to horses and then "
                      "to people. Isolate sick horses."}) + "\n"
    )  # fmt: skip
    ev = load_eval_file(f, docs, chunks, passages)
    assert ev.form == "qa" and ev.unit_of is None
    assert [q.positive_ids for q in ev.queries] == [[chunks[1].chunk_id], [chunks[4].chunk_id]]
    csv = tmp_path / "qa.csv"
    csv.write_text('question,answer\n"Who lacks vitamin D?","deficiency is common in northern winters"\n')
    assert [q.positive_ids for q in load_eval_file(csv, docs, chunks, passages).queries] == [
        [chunks[2].chunk_id]
    ]


def qa_file(folder: Path, line: str) -> Path:
    (folder / "qa.jsonl").write_text(line + "\n")
    return folder / "qa.jsonl"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda t: beir(t / "b", "q1\tNOPE\t1\nq2\tNADA\t1\n"), r"qrels/test.tsv: none of the 2 corpus ids"),
        (lambda t: beir(t / "b", "q1\tA1\n"), r"test.tsv:1: expected 3 tab-separated columns"),
        (
            lambda t: beir(t / "b", "q1\tA1\t1\n", [{"_id": "q1", "body": "x"}]),
            r"queries.jsonl:1: missing column 'text' \(columns here: _id, body\)",
        ),
        (lambda t: qa_file(t, '{"question": "q"}'), r"qa.jsonl:1: missing column 'answer'"),
        (
            lambda t: qa_file(t, '{"question": "q", "answer": "not in any passage"}'),
            r"qa.jsonl:1: the answer matches no passage",
        ),
        (lambda t: (t / "e").mkdir() or t / "e", r"/e: no queries.jsonl in the folder"),
        (lambda t: t / "missing.jsonl", r"missing.jsonl: no such file"),
    ],
)  # fmt: skip
def test_a_bad_eval_file_is_one_clear_error_naming_it(tmp_path: Path, make, expect: str) -> None:
    docs, chunks, passages = corpus()
    path = make(tmp_path)
    with pytest.raises(EvalFileError, match=expect) as e:
        load_eval_file(path, docs, chunks, passages)
    assert str(tmp_path) in str(e.value)


def rows(name: str, k: int, query_set: str, mrr: float, n: int = 3) -> list[MetricRow]:
    return [MetricRow(model=name, iteration=k, metric="MRR@5", value=mrr, n_queries=n, query_set=query_set)]


def test_select_best_uses_the_eval_file_and_the_base_can_win() -> None:
    pseudo = rows("base", 0, "inverse-cloze", 0.3) + rows("iter1", 1, "inverse-cloze", 0.6)
    real = (
        rows("base", 0, "eval-file", 0.5)
        + rows("iter1", 1, "eval-file", 0.4)
        + rows("bm25", 0, "eval-file", 0.9)
    )
    assert distiller.retrieval.evaluation.select_best(pseudo, "MRR@5") == ("iter1", "inverse-cloze")
    assert distiller.retrieval.evaluation.select_best(pseudo + real, "MRR@5") == ("base", "eval-file")
    better = rows("base", 0, "eval-file", 0.5) + rows("iter1", 1, "eval-file", 0.55)
    assert distiller.retrieval.evaluation.select_best(pseudo + better, "MRR@5") == ("iter1", "eval-file")


def _fake_run(tmp_path: Path, eval_file: Path | None) -> tuple[DistillConfig, Path]:
    """A run folder up to training (documents, chunks, ICT passages and queries, models/iter1), no model."""
    student = tmp_path / "student"
    student.mkdir()
    (student / "weights.txt").write_text("base")
    cfg = DistillConfig(
        runs_dir=str(tmp_path / "runs"),
        run_name="r",
        input={"paths": [str(tmp_path)]},
        training={"student": str(student)},
        evaluation={"eval_file": str(eval_file) if eval_file else None},
    )
    store = open_store(cfg)
    docs, chunks, passages = corpus()
    write_parquet(store.path("sources.parquet"), docs, Document)
    write_parquet(store.path("chunks.parquet"), chunks, Chunk)
    write_parquet(store.path("passages.parquet"), passages, Passage)
    queries = [
        Query(query_id=f"ict{i}", text=c.text, positive_ids=[c.chunk_id], doc_id=c.doc_id, split="test",
              teacher="offline-ict")
        for i, c in enumerate(chunks)
    ]  # fmt: skip
    write_parquet(store.path("queries.parquet"), queries, Query)
    (store.path("models/iter1")).mkdir(parents=True)
    (store.path("models/iter1/weights.txt")).write_text("iter1")
    return cfg, store.dir


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """iter1 wins on the pseudo-queries and loses on the eval file (what SciFact showed)."""
    score = {("inverse-cloze", "base"): 0.3, ("inverse-cloze", "iter1"): 0.7,
             ("eval-file", "base"): 0.6, ("eval-file", "iter1"): 0.4}  # fmt: skip

    def fake_model(model, passages, queries, ks, name, iteration, *, query_set="unknown", **_):
        assert {q.teacher for q in queries} == (
            {"eval-file"} if query_set == "eval-file" else {"offline-ict"}
        )
        return rows(name, iteration, query_set, score[(query_set, name)], len(queries))

    def fake_bm25(passages, queries, ks, *, query_set="unknown", **_):
        return rows("bm25", 0, query_set, 0.5, len(queries))

    monkeypatch.setattr(distiller.retrieval.evaluation, "evaluate_model", fake_model)
    monkeypatch.setattr(distiller.retrieval.evaluation, "evaluate_bm25", fake_bm25)
    monkeypatch.setattr(distiller.retrieval.models, "load_student", lambda path, **_: path)
    monkeypatch.setattr(distiller.retrieval.models, "load_encoder", lambda path, **_: (path, "torch"))
    # The models are folders of text files: nothing to encode into shards.
    monkeypatch.setattr(distiller.stages.evaluate, "sharded", lambda cfg: False)


def _text(renderable: object) -> str:
    console = Console(record=True, width=250, color_system=None)
    console.print(renderable)
    return " ".join(console.export_text().split())


def test_a_model_that_loses_on_real_queries_is_not_chosen(tmp_path: Path, scripted: None) -> None:
    folder = beir(tmp_path / "beir", "q1\tA1\t1\nq2\tB2\t1\n")
    cfg, run = _fake_run(tmp_path, folder)
    res = evaluate_stage(open_store(cfg), cfg)
    assert (run / "models/best/distiller_best.txt").read_text().strip() == "base"
    assert (run / "models/best/weights.txt").read_text() == "base"  # the base model's files
    assert "models/best is the base model: no trained iteration beat it on your eval file" in res.message
    assert res.details["selected_on"] == "eval-file" and res.details["eval_queries"] == 2
    card = (run / "models/best/README.md").read_text()
    assert "This model is the base model: no trained iteration beat it on your eval file" in card
    assert "| your eval file | base (" in card  # each table row says what its queries were
    assert "| inverse-cloze pseudo-queries (not real questions) | base (" in card
    assert OFFLINE_WARNING in card
    got = read_parquet(run / "metrics.parquet", MetricRow)
    assert {r.query_set for r in got} == {"inverse-cloze", "eval-file"}
    status = _text(status_renderable(run))
    assert f"Retrieval on 2 queries: {QUERY_SET_LABELS['eval-file']}" in status
    assert f"Retrieval on 5 queries: {QUERY_SET_LABELS['inverse-cloze']}" in status
    assert "models/best is the base model: no trained iteration beat it on this set" in status
    assert "base ★ best" in status and "iter1 ★" not in status
    md = summary_markdown(open_store(cfg))
    assert "## Retrieval metrics on your eval file (2 queries)" in md
    assert "## Retrieval metrics on inverse-cloze pseudo-queries (not real questions) (5 queries)" in md
    assert "your eval file" in _text(runs_table(tmp_path / "runs"))
    html = render_report(run).read_text()
    assert (
        "on your eval file (2 queries); inverse-cloze pseudo-queries (not real questions) (5 queries)" in html
    )
    assert "base (on your eval file)" in html  # the report's key figures


def test_without_an_eval_file_pseudo_query_metrics_carry_the_warning(tmp_path: Path, scripted: None) -> None:
    cfg, run = _fake_run(tmp_path, None)
    res = evaluate_stage(open_store(cfg), cfg)
    assert (run / "models/best/distiller_best.txt").read_text().strip() == "iter1"
    assert "best: iter1 on inverse-cloze pseudo-queries (not real questions)" in res.message
    assert "does not show a gain on real queries" in res.message
    status = _text(status_renderable(run))
    assert "inverse-cloze pseudo-queries (not real questions)" in status
    assert "warning: These metrics are measured on inverse-cloze pseudo-queries" in status
    assert "> These metrics are measured on inverse-cloze" in summary_markdown(open_store(cfg))


def test_a_bad_eval_file_stops_the_evaluate_stage_naming_it(tmp_path: Path, scripted: None) -> None:
    folder = beir(tmp_path / "beir", "q1\tNOPE\t1\n")
    cfg, _ = _fake_run(tmp_path, folder)
    with pytest.raises(EvalFileError, match="none of the 1 corpus ids"):
        evaluate_stage(open_store(cfg), cfg)
