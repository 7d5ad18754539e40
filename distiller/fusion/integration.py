"""Response integration: a cross-domain question is answered by each domain's teacher (from that domain's
passage), and an integrator merges the answers into one golden Q&A pair.

- Per-domain answers: each domain's own teacher (`domains[].teacher`, else base.teacher) answers from its
  passage. An offline domain teacher answers extractively: the passage's first two sentences (so `concat`
  integration works with no LLM at all; the rows' `domain_teachers` say 'extractive').
- `concat`: the answers one after another, each under its domain's name; contributions are the answers,
  nothing is resolved (contradictions stay empty: concat cannot see them).
- `llm`: the integrator (`fusion.integrator`, else base.teacher) writes one answer and records what each
  domain contributed and each contradiction it resolved. It needs an LLM: offline it is a clear error.

Integrated pairs are plain `QAPair`s in qa_pairs.parquet (teacher 'integrator:<how>'), so validation and
every Q&A export treat them like other pairs; `integrated.parquet` keeps how each was made.
"""

from __future__ import annotations

import re

from distiller.config import LLMConfig
from distiller.errors import StageError
from distiller.fusion.generators import FusionContext, Rows
from distiller.fusion.prompts import DOMAIN_ANSWER, INTEGRATE, DomainAnswer, Integrated
from distiller.prompts import quoted
from distiller.records import Passage, QAPair, Query

from .records import IntegratedAnswer, Provenance

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def extractive_answer(passage: str, sentences: int = 2) -> str:
    return " ".join(_SENTENCE.split(passage.strip())[:sentences])


def _domain_of(pid: str) -> str:
    return pid.split(":", 1)[0]


def _answers(ctx: FusionContext, queries: list[Query]) -> tuple[dict[tuple[str, str], tuple[str, str]], Rows]:
    """(query_id, domain) -> (answer, teacher) from each domain's teacher."""
    from distiller.generation.context import GenContext
    from distiller.generation.runner import StageLLM

    out: dict[tuple[str, str], tuple[str, str]] = {}
    rows = Rows()
    gctx = GenContext.from_config(ctx.fused_cfg)
    by_domain: dict[str, list[tuple[Query, Passage]]] = {}
    for q in queries:
        for pid in q.positive_ids:
            d = _domain_of(pid)
            if d in ctx.domains and pid in ctx.domains[d].by_id:
                by_domain.setdefault(d, []).append((q, ctx.domains[d].by_id[pid]))
    for d, items in by_domain.items():
        dom = ctx.domains[d]
        if dom.teacher.offline:
            out.update({(q.query_id, d): (extractive_answer(p.text), "extractive") for q, p in items})
            continue
        reqs = [
            DOMAIN_ANSWER.request(
                f"{q.query_id}@{d}",
                "generate",
                gctx.fields(
                    question=q.text, passage=quoted(p.text), domain=d, description=dom.description or d
                ),
            )
            for q, p in items
        ]
        # The domain's teacher, under the fused run's (fusion share of the) budget.
        with StageLLM(ctx.fused_cfg, ctx.run_dir, "generate", dom.teacher) as llm:
            answers = StageLLM.answers(llm.run(f"answers {d}", reqs), DomainAnswer)
            rows.notes += [f"answers {d}: {n}" for n in llm.notes]
            rows.cost_usd += llm.cost_usd
        for q, _ in items:
            a = answers.get(f"{q.query_id}@{d}")
            if a is not None:
                out[(q.query_id, d)] = (a.answer.strip(), dom.teacher.model)
    return out, rows


def integrator_endpoint(ctx: FusionContext) -> LLMConfig:
    return ctx.cfg.fusion.integrator or ctx.fused_cfg.teacher


def integrate(ctx: FusionContext, queries: list[Query]) -> Rows:
    """Integrated Q&A pairs for the cross-domain `queries` (their positives name the domains)."""
    how = ctx.cfg.fusion.integration
    endpoint = integrator_endpoint(ctx)
    if how == "llm" and endpoint.offline:
        raise StageError(
            "fusion.integration: llm needs an LLM integrator: set fusion.integrator (or base.teacher) to a "
            "provider and model, or use fusion.integration: concat"
        )
    answers, out = _answers(ctx, queries)
    ready = []
    for q in queries:
        doms = list(dict.fromkeys(_domain_of(p) for p in q.positive_ids))
        if all((q.query_id, d) in answers for d in doms):
            ready.append((q, doms))
    merged: dict[str, Integrated] = {}
    if how == "concat":
        for q, doms in ready:
            parts = [answers[(q.query_id, d)][0] for d in doms]
            merged[q.query_id] = Integrated(
                answer="\n\n".join(f"{d}: {a}" for d, a in zip(doms, parts, strict=True)),
                contributions=[{"domain": d, "contribution": a} for d, a in zip(doms, parts, strict=True)],
            )
        integrator = "concat"
    else:
        from distiller.generation.context import GenContext
        from distiller.generation.runner import StageLLM

        gctx = GenContext.from_config(ctx.fused_cfg)
        reqs = [
            INTEGRATE.request(
                q.query_id,
                "generate",
                gctx.fields(
                    question=q.text,
                    expert_answers="\n\n".join(
                        f"Expert of {d} ({ctx.domains[d].description or d}):\n"
                        + quoted(answers[(q.query_id, d)][0])
                        for d in doms
                    ),
                ),
            )
            for q, doms in ready
        ]
        with StageLLM(ctx.fused_cfg, ctx.run_dir, "generate", endpoint) as llm:
            merged = StageLLM.answers(llm.run("integrate", reqs), Integrated)
            out.notes += [f"integrate: {n}" for n in llm.notes]
            out.cost_usd += llm.cost_usd
        integrator = endpoint.model
    for q, doms in ready:
        m = merged.get(q.query_id)
        if m is None:
            continue
        said = {c.domain: c.contribution for c in m.contributions}
        qa_id = f"int:{q.query_id}"
        out.qa_pairs.append(
            QAPair(
                qa_id=qa_id,
                question=q.text,
                answer=m.answer.strip(),
                source_chunk=q.positive_ids[0],
                doc_id=q.doc_id,
                split=q.split,
                teacher=f"integrator:{integrator}",
            )
        )
        out.integrated.append(
            IntegratedAnswer(
                qa_id=qa_id,
                question=q.text,
                answer=m.answer.strip(),
                integration=how,
                integrator=integrator,
                domains=doms,
                domain_answers=[answers[(q.query_id, d)][0] for d in doms],
                domain_teachers=[answers[(q.query_id, d)][1] for d in doms],
                contributions=[said.get(d, "") for d in doms],
                contradictions=[f"{c.issue} -> {c.resolution}" for c in m.contradictions],
            )
        )
        out.provenance.append(
            Provenance(
                item_id=qa_id, item_kind="qa", generator="integrated", domains=doms, teacher=integrator
            )
        )
    if len(out.qa_pairs) < len(queries):
        out.notes.append(
            f"integration: {len(queries) - len(out.qa_pairs)} of {len(queries)} cross-domain questions "
            "got no integrated answer"
        )
    return out


__all__ = ["extractive_answer", "integrate", "integrator_endpoint"]
