"""Bootstrap mode end to end against the loopback server, in German and in English: bootstrap -> queries ->
documents -> validate -> export (stopping before training); and the real `distill` flow through Prefect in
bootstrap mode, training included, with its progress artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config

from distiller.export.rows import collect_rows
from distiller.records import Concept, GeneratedDocument, Judgment, QAPair, Query, read_parquet
from distiller.runview import RunView
from distiller.stages import bootstrap_stage, export_stage, generate_stage, open_store, validate_stage
from distiller.testing.llm_server import LLMTestServer

MARKERS = {
    "de": ("Was bedeutet", "Grundsatz", "In der Praxis wird"),
    "en": ("What does", "Principle", "In practice"),
}


def _jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.parametrize("language", ["de", "en"])
def test_bootstrap_to_export_in_the_runs_language(
    llm_server: LLMTestServer, tmp_path: Path, language: str
) -> None:
    query_word, concept_word, doc_words = MARKERS[language]
    llm_server.responder = ScriptedTeacher(reject_every=4)
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        run_name=f"legal-{language}",
        generation={"domain": "legal", "language": language, "concepts": 16, "concepts_per_call": 6},
        validation={"sample_rate": 0.5},
        export={"formats": ["jsonl"]},
    )
    store = open_store(cfg)
    stages = [f(store, cfg) for f in (bootstrap_stage, generate_stage, validate_stage, export_stage)]
    assert [s.status for s in stages] == ["completed"] * 4, [s.message for s in stages]

    concepts = read_parquet(store.path("concepts.parquet"), Concept)
    assert all(c.language == language for c in concepts)
    assert all(concept_word in c.term for c in concepts if c.kind == "concept")
    queries = read_parquet(store.path("queries.parquet"), Query)
    assert queries and all(q.text.startswith(query_word) and q.language == language for q in queries)
    docs = read_parquet(store.path("documents.parquet"), GeneratedDocument)
    assert all(d.text.startswith(doc_words) for d in docs if d.role == "positive")
    # every query traces back to a concept of the knowledge base
    assert {q.concept_id for q in queries} <= {c.concept_id for c in concepts}

    judgments = read_parquet(store.path("judgments.parquet"), Judgment)
    rejected = {j.item_id for j in judgments if j.verdict == "rejected"}
    assert judgments and rejected
    qa = {x.qa_id: x for x in read_parquet(store.path("qa_pairs.parquet"), QAPair)}
    assert {x.validation for x in qa.values()} == {"approved", "rejected", "unvalidated"}
    # bootstrap mode: a rejected Q&A pair is its query too, so the query is gone as well
    assert not rejected & {q.query_id for q in queries}
    assert "Q&A pairs approval" in (stages[2].message or "") and "95% CI" in (stages[2].message or "")

    qa_rows = _jsonl(store.path("exports"))
    assert qa_rows and not {r["id"] for r in qa_rows} & rejected
    assert all(r["instruction"].startswith(query_word) for r in qa_rows)
    # the retrieval rows the exporter builds (the hf format's `queries`): positives are the documents
    query_rows = [
        r for rows in collect_rows(RunView(store.dir), None, cfg.seed).queries.values() for r in rows
    ]
    assert len(query_rows) == len(queries)
    assert all(r["positives"] and r["positives"][0].startswith(doc_words) for r in query_rows)


@pytest.mark.slow
def test_distill_flow_in_bootstrap_mode_trains_and_reports_progress(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from flows.distill import distill

    llm_server.responder = ScriptedTeacher(reject_every=5)
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        run_name="flow-legal",
        generation={"domain": "legal", "concepts": 20, "concepts_per_call": 10, "queries_per_concept": 2},
        training={"max_seq_length": 48, "batch_size": 8, "epochs": 1, "save_steps": 50},
        mining={"iterations": 1, "top_k": 20, "encode_batch_size": 32},
        evaluation={"ks": [1, 5, 10]},
        export={"formats": ["jsonl", "triplets"]},
    )
    result = distill(config=cfg)
    assert list(result["stages"]) == [
        "bootstrap",
        "generate",
        "validate",
        "mine_iter1",
        "train_iter1",
        "evaluate",
        "export",
        "report",
    ]
    assert set(result["stages"].values()) == {"completed"}
    run = Path(result["run_dir"])
    manifest = json.loads((run / "manifest.json").read_text())
    mine = manifest["stages"]["mine_iter1"]["details"]
    assert mine["accumulated"] > mine["new"]  # the teacher's contrastive triplets joined the first iteration
    with get_client(sync_client=True) as client:
        progress = [a for a in client.read_artifacts() if a.type == "progress"]
    keys = {a.key for a in progress}
    assert {
        "flow-legal-bootstrap-concepts-round-1-progress",
        "flow-legal-generate-documents-progress",
    } <= keys
    assert any(k.startswith("flow-legal-validate-judge") for k in keys)
    assert all(a.data == 100.0 for a in progress)  # each step's last update: done
    assert any("rows" in (a.description or "") and "spent" in (a.description or "") for a in progress)
