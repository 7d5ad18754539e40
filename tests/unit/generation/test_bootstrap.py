"""Bootstrap against the loopback server: a knowledge base from a domain's name, in batches until the count
is reached, de-duplicated, with relationships among known concepts only; garbage answers become failed
rows, a $0 budget sends nothing, a small one stops cleanly and says after how many; a re-run is free."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config

from distiller.generation.bootstrap import normalize_term
from distiller.records import Concept, read_parquet
from distiller.stages import bootstrap_stage, open_store
from distiller.testing.llm_server import LLMTestServer


def _run(server: LLMTestServer, tmp_path: Path, **sections):
    cfg = llm_run_config(server, tmp_path / "runs", **sections)
    store = open_store(cfg)
    return store, bootstrap_stage(store, cfg)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_bootstrap_reaches_the_count_deduplicated_with_relationships(
    llm_server: LLMTestServer, tmp_path: Path, provider: str
) -> None:
    teacher = ScriptedTeacher()
    llm_server.responder = teacher
    store, res = _run(
        llm_server,
        tmp_path,
        provider=provider,
        generation={"domain": "legal", "concepts": 10, "concepts_per_call": 4},
    )
    assert res.status == "completed"
    rows = read_parquet(store.path("concepts.parquet"), Concept)
    concepts = [c for c in rows if c.kind == "concept"]
    rels = [c for c in rows if c.kind == "relationship"]
    assert len(concepts) == 10
    assert len({normalize_term(c.term) for c in concepts}) == 10  # the model's repeats are gone
    assert all(c.definition and c.examples and c.related_terms and c.category for c in concepts)
    assert all(c.domain == "legal" and c.language == "en" and c.teacher == "test-model" for c in rows)
    ids = {c.concept_id for c in concepts}
    assert rels and all(r.source_id in ids and r.target_id in ids for r in rels)
    assert all(r.relation_type == "contrasts_with" and r.examples for r in rels)
    assert res.details["relationships_with_unknown_terms"] > 0  # named a term nobody defined: dropped
    assert res.message.startswith(f"10 concepts and {len(rels)} relationships for domain 'legal' (en")
    # one request per batch of 4 (3 in round 1), one relationships request per batch of concepts
    assert teacher.seen["ConceptBatch"] == 3 and teacher.seen["RelationshipBatch"] == 3
    # the template's subtopics spread the batches, and the known terms are shown to later ones
    focuses = {r.first_user.splitlines()[0].split("Focus: ")[1] for r in llm_server.requests[:3]}
    assert len(focuses) == 3

    llm_server.reset()
    _, again = _run(
        llm_server,
        tmp_path,
        provider=provider,
        generation={"domain": "legal", "concepts": 10, "concepts_per_call": 4},
    )
    assert again.status == "cached" and llm_server.count == 0


def test_rounds_follow_what_the_model_actually_yields(llm_server: LLMTestServer, tmp_path: Path) -> None:
    teacher = ScriptedTeacher()

    def one_each(req):  # a model that gives one concept whatever it is asked for
        answer = teacher(req)
        if req.schema_name == "ConceptBatch":
            answer["concepts"] = answer["concepts"][:1]
        return answer

    llm_server.responder = one_each
    _, res = _run(
        llm_server,
        tmp_path,
        generation={"domain": "medical", "concepts": 9, "concepts_per_call": 4, "relationships_per_call": 0},
    )
    assert res.details["concepts"] == 9 and res.details["rounds"] == 2
    # round 1: 3 calls of 4 asked, 1 each came -> round 2 asks the 6 missing in 6 calls of 1
    assert teacher.seen["ConceptBatch"] == 9
    second_round = [r for r in llm_server.requests if r.first_user.startswith("Batch 2.")]
    assert len(second_round) == 6 and all("Give 1 new concepts" in r.first_user for r in second_round)
    assert "Already covered (3 terms)" in second_round[0].first_user


def test_a_model_that_only_repeats_itself_is_not_asked_forever(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = lambda req: {
        "concepts": [{"term": "Lease", "definition": "A contract to rent property."}]
    }
    _, res = _run(
        llm_server,
        tmp_path,
        generation={"domain": "legal", "concepts": 5, "concepts_per_call": 5, "relationships_per_call": 0},
    )
    assert res.details["concepts"] == 1 and res.details["rounds"] == 2
    assert "1 of 5 concepts asked for" in res.message and "no new concepts; stopped asking" in res.message


def test_garbage_answers_become_failed_rows_not_a_crash(llm_server: LLMTestServer, tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    # batch 1.1 always answers broken JSON, batch 1.2 valid JSON of the wrong shape; 1.3 is fine
    teacher.bad = lambda req: {"Batch 1.1.": "malformed", "Batch 1.2.": "wrong_schema"}.get(
        req.first_user[:10]
    )
    llm_server.responder = teacher
    store, res = _run(
        llm_server,
        tmp_path,
        teacher={"max_parse_retries": 1},
        generation={
            "domain": "legal",
            "concepts": 12,
            "concepts_per_call": 4,
            "relationships_per_call": 0,
        },
    )
    assert res.status == "completed"
    failures = {f["item_id"]: f["error"] for f in res.details["failures"]}
    assert (
        "not valid JSON" in failures["concepts-r1-0"]
        and "gave up after 2 attempts" in failures["concepts-r1-0"]
    )
    assert "does not match the schema ConceptBatch" in failures["concepts-r1-1"]
    # the rest was asked again in round 2 and the count still reached (the broken batches keep failing)
    assert res.details["concepts"] == 12 and res.details["failed_rows"] >= 2
    ledger = pd.read_parquet(store.path("ledger.parquet"))
    assert (ledger.status == "parse_error").sum() >= 4  # each bad request: first try + one re-ask


def test_zero_budget_sends_nothing_and_says_so(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    store, res = _run(llm_server, tmp_path, budget={"run_usd": 0.0}, generation={"domain": "legal"})
    assert llm_server.count == 0
    assert "budget is $0, no LLM call sent" in res.message and "0 of 8 concepts asked for" in res.message
    assert read_parquet(store.path("concepts.parquet"), Concept) == []


def test_a_small_budget_stops_cleanly_and_says_after_how_many(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher()
    priced = llm_server.llm_config(input_price_per_mtok=1.0, output_price_per_mtok=1.0, max_concurrency=2)
    store, res = _run(
        llm_server,
        tmp_path,
        teacher=priced.model_dump(),
        budget={"run_usd": 0.006},
        generation={"domain": "legal", "concepts": 40, "concepts_per_call": 4, "relationships_per_call": 0},
    )
    assert "budget reached after" in res.message and "of 10" in res.message
    got = res.details["concepts"]
    assert 0 < got < 40 and f"{got} of 40 concepts asked for" in res.message
    assert res.cost_usd <= 0.006
    ledger = pd.read_parquet(store.path("ledger.parquet"))
    assert ledger.cost_usd.sum() <= 0.006 and (ledger.status == "budget").any()
