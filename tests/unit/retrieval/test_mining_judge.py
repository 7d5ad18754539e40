"""The mining guard's judge: mined hard negatives that outrank their positive are shown to a judge LLM (the
loopback server), and the ones it says answer the query are dropped; under a zero mining budget nothing is
sent and every triplet is kept, with the reason in the stage's message."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from helpers.corpus import tiny_overrides

from distiller.config import load_config
from distiller.records import Triplet, read_parquet
from distiller.retrieval.mining_judge import suspects
from distiller.stages import generate_stage, ingest_stage, mine_stage, open_store
from distiller.testing.llm_server import ChatRequest, LLMTestServer

pytestmark = pytest.mark.slow


def _says_answers(req: ChatRequest) -> bool:
    # Deterministic per (query, passage): about half the negatives "answer" their query.
    return hashlib.sha256(req.first_user.encode()).digest()[0] % 2 == 0


def _judge(req: ChatRequest) -> dict:
    assert req.schema_name == "NegativeCheck"
    return {"analysis": "Compared the passage with the query.", "answers_query": _says_answers(req)}


def _config(server: LLMTestServer, corpus: Path, runs: Path, **mining: object):
    judge = server.llm_config("anthropic", model="judge-model", input_price_per_mtok=1.0).model_dump()
    overrides = tiny_overrides(corpus, runs, mining={"judge_negatives": True, **mining})
    overrides["validation"] = {"judge": judge}  # the teacher stays offline: inverse-cloze queries
    return load_config(overrides=overrides)


def _mine_without_judge(cfg, runs: Path) -> list[Triplet]:
    plain = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"judge_negatives": False})})
    store = open_store(plain)
    ingest_stage(store, plain)
    generate_stage(store, plain)
    mine_stage(store, plain, 1)
    return read_parquet(store.path("triplets_iter1.parquet"), Triplet)


def test_judge_drops_the_negatives_that_answer_their_query(
    llm_server: LLMTestServer, tiny_corpus: Path, tmp_path: Path
) -> None:
    llm_server.responder = _judge
    cfg = _config(llm_server, tiny_corpus, tmp_path / "runs", judge_negatives_max=40)
    before = _mine_without_judge(cfg, tmp_path / "runs")
    asked = suspects(before, 40)
    assert asked, "the tiny corpus has hard negatives ranked above their positive"

    store = open_store(cfg)
    res = mine_stage(store, cfg, 1)
    after = read_parquet(store.path("triplets_iter1.parquet"), Triplet)
    sent = [r for r in llm_server.requests if r.schema_name == "NegativeCheck"]
    assert len(sent) == len(asked) == res.details["judge_checked"]
    assert all(r.api == "anthropic" and r.model == "judge-model" for r in sent)

    answered = {r.first_user for r in sent if _says_answers(r)}

    def pairs(ts: list[Triplet]) -> set[tuple[str, str]]:
        return {(t.query_id, t.negative_id) for t in ts}

    dropped_pairs = pairs(before) - pairs(after)
    assert len(dropped_pairs) == len(answered) == res.details["judge_false_negatives"] > 0
    # exactly the judged-positive pairs went, with every triplet that used them; the rest are untouched
    assert len(before) - len(after) == res.details["judge_triplets_dropped"]
    assert all(t in before for t in after)
    assert f"{len(answered)} of {len(asked)} negatives checked answer their query" in (res.message or "")
    ledger = pd.read_parquet(store.path("ledger.parquet"))
    assert set(ledger.stage) == {"mine_iter1"} and len(ledger) == len(asked)

    # A second run of the stage is served from the stage cache: nothing is sent again.
    llm_server.reset()
    assert mine_stage(store, cfg, 1).status == "cached" and llm_server.count == 0


def test_zero_mining_budget_sends_nothing_and_keeps_every_triplet(
    llm_server: LLMTestServer, tiny_corpus: Path, tmp_path: Path
) -> None:
    llm_server.responder = _judge
    cfg = _config(llm_server, tiny_corpus, tmp_path / "runs")
    cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"mining_usd": 0.0})})
    before = _mine_without_judge(cfg, tmp_path / "runs")
    store = open_store(cfg)
    res = mine_stage(store, cfg, 1)
    assert llm_server.count == 0
    assert read_parquet(store.path("triplets_iter1.parquet"), Triplet) == before
    assert "not judged (failed or over budget): kept" in (res.message or "")
