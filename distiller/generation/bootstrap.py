"""Bootstrap: a domain's knowledge base from its name alone — concepts (term, definition, example, related
terms) asked for in batches until the count is reached, de-duplicated, then relationships among them.

Batches run in rounds: each round asks, in parallel, for what is still missing, spread over the
template's subtopics and showing the model the terms already covered. The number of requests of a round
follows what the previous round actually yielded per call, so a model that returns fewer concepts than
asked (or repeats itself) is asked more often, and a round that yields nothing new ends the loop instead of
spending on more of the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.generation.context import GenContext
from distiller.generation.plan import chunked, stable_id
from distiller.generation.runner import StageLLM
from distiller.llm import LLMRequest
from distiller.prompts.concepts import CONCEPTS, RELATIONSHIPS, ConceptBatch, ConceptItem, RelationshipBatch
from distiller.records import Concept

STAGE = "bootstrap"
MAX_ROUNDS = 6
KNOWN_SHOWN = 300
"""Terms listed as already covered in a concepts prompt: enough to steer, without prompts growing forever."""

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_term(term: str) -> str:
    """Case, punctuation and spacing folded: 'Statute of Limitations' == 'statute-of-limitations'."""
    return _NON_WORD.sub(" ", term.casefold()).strip()


@dataclass
class BootstrapResult:
    rows: list[Concept]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0

    @property
    def concepts(self) -> list[Concept]:
        return [c for c in self.rows if c.kind == "concept"]

    @property
    def relationships(self) -> list[Concept]:
        return [c for c in self.rows if c.kind == "relationship"]


def bootstrap(cfg: DistillConfig, run_dir: Path) -> BootstrapResult:
    ctx = GenContext.from_config(cfg)
    with StageLLM(cfg, run_dir, STAGE) as llm:
        concepts, rounds = _concepts(ctx, llm)
        relationships, unmatched = _relationships(ctx, llm, concepts)
    target = cfg.generation.concepts
    head = (
        f"{len(concepts)} concepts and {len(relationships)} relationships for domain {ctx.domain_name!r} "
        f"({ctx.language.code}, template {ctx.domain.name})"
    )
    notes = list(llm.notes)
    if len(concepts) < target:
        notes.insert(0, f"{len(concepts)} of {target} concepts asked for")
    return BootstrapResult(
        rows=concepts + relationships,
        message="; ".join([head, *notes]),
        details={
            "concepts": len(concepts),
            "relationships": len(relationships),
            "target": target,
            "rounds": rounds,
            "relationships_with_unknown_terms": unmatched,
            "template": ctx.domain.name,
            "language": ctx.language.code,
            "prompts": [CONCEPTS.id, RELATIONSHIPS.id],
            **llm.details(),
        },
        cost_usd=llm.cost_usd,
    )


def concepts_round_requests(
    ctx: GenContext, round_: int, n_req: int, n_each: int, asked: int, n_known: int, known: str
) -> list[LLMRequest]:
    """One round's concepts requests, each on the next subtopic (`asked`: requests of earlier rounds)."""
    subtopics = ctx.domain.subtopics or ["the core concepts of the domain"]
    return [
        CONCEPTS.request(
            f"concepts-r{round_}-{i}",
            STAGE,
            ctx.fields(
                batch_label=f"Batch {round_}.{i + 1}",
                focus=subtopics[(asked + i) % len(subtopics)],
                n=n_each,
                n_known=n_known,
                known=known,
            ),
        )
        for i in range(n_req)
    ]


def relationship_requests(ctx: GenContext, terms: list[str]) -> list[LLMRequest]:
    """Relationships asked among each batch of `concepts_per_call` terms."""
    gen = ctx.cfg.generation
    batches = chunked(terms, gen.concepts_per_call)
    if len(batches) > 1 and len(batches[-1]) < 2:  # one concept alone has nothing to relate to
        batches[-2].extend(batches.pop())
    return [
        RELATIONSHIPS.request(
            f"relationships-{k}", STAGE, ctx.fields(terms="; ".join(batch), n=gen.relationships_per_call)
        )
        for k, batch in enumerate(batches)
    ]


def _concept(ctx: GenContext, item: ConceptItem, norm: str) -> Concept:
    return Concept(
        concept_id="c" + stable_id(ctx.domain_name, ctx.language.code, norm),
        kind="concept",
        term=item.term.strip(),
        definition=item.definition.strip(),
        examples=[item.example.strip()] if item.example.strip() else [],
        related_terms=[t.strip() for t in item.related_terms if t.strip()],
        category=item.category.strip() or None,
        domain=ctx.domain_name,
        language=ctx.language.code,
        teacher=ctx.teacher,
    )


def _concepts(ctx: GenContext, llm: StageLLM) -> tuple[list[Concept], int]:
    gen = ctx.cfg.generation
    target, per_call = gen.concepts, gen.concepts_per_call
    known: dict[str, Concept] = {}
    per_answer = float(per_call)  # new concepts an answered call yields; measured after each round
    asked = rounds = 0
    while rounds < MAX_ROUNDS and (missing := target - len(known)) > 0:
        rounds += 1
        n_req = min(missing, math.ceil(missing / per_answer))
        n_each = min(per_call, math.ceil(missing / n_req))
        shown = "; ".join(c.term for c in list(known.values())[-KNOWN_SHOWN:]) or "(none yet)"
        requests = concepts_round_requests(ctx, rounds, n_req, n_each, asked, len(known), shown)
        asked += n_req
        answers = llm.answers(llm.run(f"concepts round {rounds}", requests), ConceptBatch)
        new = 0
        for req in requests:  # request order, not arrival order: the same answers give the same rows
            for item in answers[req.item_id].concepts if req.item_id in answers else []:
                norm = normalize_term(item.term)
                if norm and norm not in known:
                    new += 1
                    if len(known) < target:
                        known[norm] = _concept(ctx, item, norm)
        if not answers or new == 0:
            if answers:
                llm.notes.append(f"concepts round {rounds}: no new concepts; stopped asking")
            break
        per_answer = max(1.0, new / len(answers))
    return list(known.values()), rounds


def _relationships(ctx: GenContext, llm: StageLLM, concepts: list[Concept]) -> tuple[list[Concept], int]:
    gen = ctx.cfg.generation
    if gen.relationships_per_call == 0 or len(concepts) < 2:
        return [], 0
    by_norm = {normalize_term(c.term): c for c in concepts}
    requests = relationship_requests(ctx, [c.term for c in concepts])
    answers = llm.answers(llm.run("relationships", requests), RelationshipBatch)
    out: dict[str, Concept] = {}
    unmatched = 0
    for req in requests:
        for item in answers[req.item_id].relationships if req.item_id in answers else []:
            src, tgt = by_norm.get(normalize_term(item.source)), by_norm.get(normalize_term(item.target))
            if src is None or tgt is None or src is tgt:
                unmatched += 1  # the model named a term that is not in the knowledge base
                continue
            rtype = normalize_term(item.type).replace(" ", "_") or "related_to"
            rid = "r" + stable_id(src.concept_id, rtype, tgt.concept_id)
            out.setdefault(
                rid,
                Concept(
                    concept_id=rid,
                    kind="relationship",
                    term=f"{src.term} --{rtype}--> {tgt.term}",
                    definition=item.description.strip(),
                    examples=[e.strip() for e in item.examples if e.strip()],
                    related_terms=[src.term, tgt.term],
                    relation_type=rtype,
                    source_id=src.concept_id,
                    target_id=tgt.concept_id,
                    domain=ctx.domain_name,
                    language=ctx.language.code,
                    teacher=ctx.teacher,
                ),
            )
    return list(out.values()), unmatched


__all__ = [
    "BootstrapResult",
    "bootstrap",
    "concepts_round_requests",
    "normalize_term",
    "relationship_requests",
]
