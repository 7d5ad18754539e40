"""Data generators of a fusion run, each a small class behind one interface (`Generator`).

- `single`: each domain's own queries and Q&A pairs, as its sub-run made them.
- `cross`: questions that need one passage of each of two domains; positives from both. With an LLM
  teacher it sees the two passages and writes the question. Offline (no LLM) the question is the two
  domains' own questions for those passages joined ("offline-concat"): a retrieval query whose answer
  needs both passages, not a natural question, which the rows' teacher field says.
- `adversarial`: questions that read like domain A but are answered by a domain-B passage, with the
  domain-A passage as a generated negative. With an LLM the teacher writes the question from the two
  passages; offline, domain B's own training questions whose BM25 top hits (over A ∪ B) are domain-A
  passages are used as they are, the A passages that outrank the answer becoming their negatives ("bm25":
  questions that already look like A to a lexical engine).
- `curated`: the user's own examples (`fusion.curated_file`), passed through unchanged, marked curated.

Every row gets a `Provenance` row (generator, domain(s), teacher). To add your own: subclass
`Generator`, give it a `name`, and `register` it; `fusion_generators()` lists what a run uses.
"""

from __future__ import annotations

import itertools
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from distiller.config import DistillConfig, LLMConfig
from distiller.fusion.config import FusionConfig
from distiller.fusion.domains import DomainData
from distiller.fusion.prompts import ADVERSARIAL_QUERY, CROSS_QUERY, FusionQuery
from distiller.generation.plan import stable_id
from distiller.prompts import Prompt, quoted
from distiller.records import Passage, QAPair, Query, Triplet

from .records import IntegratedAnswer, Provenance

log = logging.getLogger("distiller")


@dataclass
class FusionContext:
    """What every generator may read: the config, the domains' rows, the fused run's folder and config."""

    cfg: FusionConfig
    domains: dict[str, DomainData]
    fused_cfg: DistillConfig
    run_dir: Path

    @property
    def seed(self) -> int:
        return self.fused_cfg.seed

    @property
    def offline(self) -> bool:
        return self.fused_cfg.teacher.offline

    def train_queries(self, domain: str) -> list[Query]:
        return [q for q in self.domains[domain].queries if q.split == "train"]

    def single_train_count(self) -> int:
        return sum(len(self.train_queries(d)) for d in self.domains)


@dataclass
class Rows:
    """What a generator adds to the fused run."""

    queries: list[Query] = field(default_factory=list)
    qa_pairs: list[QAPair] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)
    integrated: list[IntegratedAnswer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cost_usd: float = 0.0

    def extend(self, other: Rows) -> None:
        for name in ("queries", "qa_pairs", "passages", "triplets", "provenance", "integrated", "notes"):
            getattr(self, name).extend(getattr(other, name))
        self.cost_usd += other.cost_usd


class Generator(ABC):
    """One source of fused training/evaluation rows."""

    name: ClassVar[str]

    @abstractmethod
    def generate(self, ctx: FusionContext) -> Rows: ...


REGISTRY: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    REGISTRY[cls.name] = cls
    return cls


@register
class SingleDomain(Generator):
    name = "single"

    def generate(self, ctx: FusionContext) -> Rows:
        out = Rows()
        for d in ctx.domains.values():
            out.queries += d.queries
            out.qa_pairs += d.qa_pairs
            out.passages += d.passages
            out.provenance += [
                Provenance(
                    item_id=q.query_id,
                    item_kind="query",
                    generator=self.name,
                    domains=[d.name],
                    teacher=q.teacher,
                )
                for q in d.queries
            ]
            out.provenance += [
                Provenance(
                    item_id=a.qa_id, item_kind="qa", generator=self.name, domains=[d.name], teacher=a.teacher
                )
                for a in d.qa_pairs
            ]
        return out


def _first_positive(q: Query, d: DomainData) -> Passage | None:
    return next((d.by_id[p] for p in q.positive_ids if p in d.by_id), None)


def _pairs(ctx: FusionContext, ordered: bool) -> list[tuple[str, str]]:
    names = list(ctx.domains)
    return list(itertools.permutations(names, 2) if ordered else itertools.combinations(names, 2))


def _llm_questions(
    ctx: FusionContext, prompt: Prompt, items: list[tuple[str, dict[str, str]]], endpoint: LLMConfig
) -> tuple[dict[str, str], list[str], float]:
    """item_id -> question written by the teacher; notes; cost."""
    from distiller.generation.context import GenContext
    from distiller.generation.runner import StageLLM

    gctx = GenContext.from_config(ctx.fused_cfg)
    with StageLLM(ctx.fused_cfg, ctx.run_dir, "generate", endpoint) as llm:
        results = llm.run(prompt.name, [prompt.request(i, "generate", gctx.fields(**v)) for i, v in items])
        answers = StageLLM.answers(results, FusionQuery)
        return {k: a.question.strip() for k, a in answers.items()}, list(llm.notes), llm.cost_usd


def _split_pairs(
    ctx: FusionContext, a: str, b: str, split: str, n: int, rng: random.Random
) -> list[tuple[Query, Query]]:
    """n pairs (query of a, query of b) of the given split, drawn without repeating a query while it can."""
    qa = [q for q in ctx.domains[a].queries if q.split == split]
    qb = [q for q in ctx.domains[b].queries if q.split == split]
    if not qa or not qb or n <= 0:
        return []
    rng.shuffle(qa)
    rng.shuffle(qb)
    return [(qa[i % len(qa)], qb[i % len(qb)]) for i in range(n)]


def _share(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


@register
class CrossDomain(Generator):
    """Queries that need a passage of each of two domains (train and held-out ones, for Cross-Domain
    Accuracy), positives from both."""

    name = "cross"

    def generate(self, ctx: FusionContext) -> Rows:
        out = Rows()
        ratio = ctx.cfg.fusion.cross_domain_ratio
        pairs = _pairs(ctx, ordered=False)
        rng = random.Random(f"{ctx.seed}:cross")
        plan: list[tuple[str, str, str, Query, Query]] = []
        for split in ("train", "test"):
            n_single = sum(1 for d in ctx.domains.values() for q in d.queries if q.split == split)
            for (a, b), n in zip(pairs, _share(round(ratio * n_single), len(pairs)), strict=True):
                plan += [(split, a, b, qa, qb) for qa, qb in _split_pairs(ctx, a, b, split, n, rng)]
        rows = []
        for split, a, b, qa, qb in plan:
            pa, pb = _first_positive(qa, ctx.domains[a]), _first_positive(qb, ctx.domains[b])
            if pa is None or pb is None:
                continue
            rows.append((stable_id("cross", pa.passage_id, pb.passage_id), split, a, b, qa, qb, pa, pb))
        rows = list({r[0]: r for r in rows}.values())  # one query per passage pair
        if ctx.offline:
            texts = {r[0]: f"{r[4].text.rstrip('?. ')}; and {r[5].text}" for r in rows}
            teacher = "offline-concat"
        else:
            items = [(rid, self._fields(ctx, a, b, pa, pb)) for rid, _, a, b, _, _, pa, pb in rows]
            texts, notes, cost = _llm_questions(ctx, CROSS_QUERY, items, ctx.fused_cfg.teacher)
            out.notes += [f"cross: {n}" for n in notes]
            out.cost_usd += cost
            teacher = ctx.fused_cfg.teacher.model
        for rid, split, a, b, _, _, pa, pb in rows:
            if rid not in texts:
                continue
            qid = f"cross:{rid}"
            out.queries.append(
                Query(
                    query_id=qid,
                    text=texts[rid],
                    positive_ids=[pa.passage_id, pb.passage_id],
                    # The split unit: both source documents, so the pair never straddles train and test.
                    doc_id=f"cross:{pa.doc_id}+{pb.doc_id}",
                    split=split,
                    teacher=teacher,
                    language=ctx.fused_cfg.generation.language,
                    query_type="cross_domain",
                )
            )
            out.provenance.append(
                Provenance(
                    item_id=qid, item_kind="query", generator=self.name, domains=[a, b], teacher=teacher
                )
            )
        if not rows:
            out.notes.append("cross: no passage pairs (a domain has no queries of a split)")
        return out

    @staticmethod
    def _fields(ctx: FusionContext, a: str, b: str, pa: Passage, pb: Passage) -> dict[str, str]:
        da, db = ctx.domains[a], ctx.domains[b]
        return {
            "domain_a": a,
            "domain_b": b,
            "description_a": da.description or a,
            "description_b": db.description or b,
            "passage_a": quoted(pa.text),
            "passage_b": quoted(pb.text),
        }


@register
class Adversarial(Generator):
    """Queries that look like domain A and are answered by domain B; domain-A passages as negatives."""

    name = "adversarial"

    def generate(self, ctx: FusionContext) -> Rows:
        n_total = round(ctx.cfg.fusion.adversarial_ratio * ctx.single_train_count())
        pairs = _pairs(ctx, ordered=True)
        if n_total <= 0 or not pairs:
            return Rows()
        return self._offline(ctx, pairs, n_total) if ctx.offline else self._llm(ctx, pairs, n_total)

    def _confusers(self, ctx: FusionContext, a: str, b: str) -> list[tuple[Query, Passage, list[Passage]]]:
        """(B training query, its answer, A passages BM25 ranks above the answer), most confused first."""
        import bm25s

        da, db = ctx.domains[a], ctx.domains[b]
        train_docs = {q.doc_id for q in ctx.train_queries(a)} | {q.doc_id for q in ctx.train_queries(b)}
        corpus = [p for p in da.passages + db.passages if p.doc_id in train_docs]
        queries = [q for q in ctx.train_queries(b) if _first_positive(q, db) is not None]
        if not corpus or not queries:
            return []
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize([p.text for p in corpus], stopwords="en", show_progress=False), show_progress=False
        )
        k = min(10, len(corpus))
        docs, _ = retriever.retrieve(
            bm25s.tokenize([q.text for q in queries], stopwords="en", show_progress=False),
            k=k,
            show_progress=False,
            n_threads=1,
        )
        found = []
        for q, row in zip(queries, docs, strict=True):
            ranked = [corpus[int(i)] for i in row]
            gt = set(q.positive_ids)
            above: list[Passage] = []
            for p in ranked:
                if p.passage_id in gt:
                    break
                if p.passage_id in da.by_id:
                    above.append(p)
            if above:
                found.append((q, db.by_id[next(p for p in q.positive_ids if p in db.by_id)], above))
        found.sort(key=lambda t: -len(t[2]))
        return found

    def _offline(self, ctx: FusionContext, pairs: list[tuple[str, str]], n_total: int) -> Rows:
        out = Rows()
        for (a, b), n in zip(pairs, _share(n_total, len(pairs)), strict=True):
            for q, pos, negs in self._confusers(ctx, a, b)[:n]:
                neg = negs[0]
                out.triplets.append(
                    Triplet(
                        query_id=q.query_id,
                        query=q.text,
                        positive_id=pos.passage_id,
                        positive=pos.text,
                        negative_id=neg.passage_id,
                        negative=neg.text,
                        kind="generated",
                        iteration=1,
                    )
                )
                out.provenance.append(
                    Provenance(
                        item_id=f"{q.query_id}|{neg.passage_id}",
                        item_kind="triplet",
                        generator=self.name,
                        domains=[a, b],
                        teacher="bm25",
                    )
                )
        if not out.triplets:
            out.notes.append(
                "adversarial (offline): no training question of one domain has another domain's "
                "passage above its answer in BM25"
            )
        return out

    def _llm(self, ctx: FusionContext, pairs: list[tuple[str, str]], n_total: int) -> Rows:
        out = Rows()
        rng = random.Random(f"{ctx.seed}:adversarial")
        plan = []
        for (a, b), n in zip(pairs, _share(n_total, len(pairs)), strict=True):
            # Prefer the pairs BM25 already confuses; fill up with random pairs of training passages.
            confused = [(pos, negs[0]) for _, pos, negs in self._confusers(ctx, a, b)[:n]]
            for qa, qb in _split_pairs(ctx, a, b, "train", n - len(confused), rng):
                pa, pb = _first_positive(qa, ctx.domains[a]), _first_positive(qb, ctx.domains[b])
                if pa is not None and pb is not None:
                    confused.append((pb, pa))
            plan += [(stable_id("adv", pb.passage_id, pa.passage_id), a, b, pb, pa) for pb, pa in confused]
        plan = list({r[0]: r for r in plan}.values())
        items = [(rid, CrossDomain._fields(ctx, a, b, pa, pb)) for rid, a, b, pb, pa in plan]
        texts, notes, cost = _llm_questions(ctx, ADVERSARIAL_QUERY, items, ctx.fused_cfg.teacher)
        out.notes += [f"adversarial: {n}" for n in notes]
        out.cost_usd += cost
        teacher = ctx.fused_cfg.teacher.model
        for rid, a, b, pb, pa in plan:
            if rid not in texts:
                continue
            qid = f"adv:{rid}"
            out.queries.append(
                Query(
                    query_id=qid,
                    text=texts[rid],
                    positive_ids=[pb.passage_id],
                    doc_id=pb.doc_id,
                    split="train",
                    teacher=teacher,
                    query_type="adversarial",
                )
            )
            out.triplets.append(
                Triplet(
                    query_id=qid,
                    query=texts[rid],
                    positive_id=pb.passage_id,
                    positive=pb.text,
                    negative_id=pa.passage_id,
                    negative=pa.text,
                    kind="generated",
                    iteration=1,
                )
            )
            out.provenance.append(
                Provenance(
                    item_id=qid, item_kind="query", generator=self.name, domains=[a, b], teacher=teacher
                )
            )
            out.provenance.append(
                Provenance(
                    item_id=f"{qid}|{pa.passage_id}",
                    item_kind="triplet",
                    generator=self.name,
                    domains=[a, b],
                    teacher=teacher,
                )
            )
        return out


@register
class Curated(Generator):
    """The user's own examples, unchanged: each answer a passage, each question a query and a Q&A pair."""

    name = "curated"

    def generate(self, ctx: FusionContext) -> Rows:
        from distiller.errors import InputFileError
        from distiller.labeled import read_qa_rows

        out = Rows()
        path = ctx.cfg.fusion.curated_file
        if not path:
            return out
        rows, columns = read_qa_rows(Path(path))
        for col in ("question", "answer"):
            if col not in columns:
                raise InputFileError(
                    path, f"missing column {col!r} (columns found: {', '.join(columns) or 'none'})"
                )
        known = set(ctx.domains)
        for i, (line, row) in enumerate(rows, start=1):
            q, a = row.get("question"), row.get("answer")
            if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
                raise InputFileError(path, f"row {i}: question and answer must be non-empty text", line=line)
            dom = row.get("domain")
            if dom is not None and str(dom) not in known:
                raise InputFileError(
                    path, f"row {i}: unknown domain {dom!r} (domains: {', '.join(known)})", line=line
                )
            domains = [str(dom)] if dom is not None else ["curated"]
            split = row.get("split") if row.get("split") in ("train", "val", "test") else "train"
            rid = stable_id("curated", q, a)
            pid, qid = f"curated:p{rid}", f"curated:{rid}"
            out.passages.append(Passage(passage_id=pid, doc_id=f"curated:{rid}", chunk_id=pid, text=a))
            out.queries.append(
                Query(
                    query_id=qid,
                    text=q,
                    positive_ids=[pid],
                    doc_id=f"curated:{rid}",
                    split=split,
                    teacher="curated",
                )
            )
            out.qa_pairs.append(
                QAPair(
                    qa_id=qid,
                    question=q,
                    answer=a,
                    source_chunk=pid,
                    doc_id=f"curated:{rid}",
                    split=split,
                    teacher="curated",
                    validation="approved",
                )
            )
            for kind, item in (("query", qid), ("qa", qid), ("passage", pid)):
                out.provenance.append(
                    Provenance(
                        item_id=item, item_kind=kind, generator=self.name, domains=domains, teacher="curated"
                    )
                )
        return out


def fusion_generators(cfg: FusionConfig) -> list[Generator]:
    """The generators a run uses, in order: single, cross, adversarial, curated (those switched on)."""
    gens: list[Generator] = [SingleDomain()]
    if cfg.fusion.cross_domain_ratio > 0:
        gens.append(CrossDomain())
    if cfg.fusion.adversarial_ratio > 0:
        gens.append(Adversarial())
    if cfg.fusion.curated_file:
        gens.append(Curated())
    return gens


__all__ = [
    "REGISTRY",
    "Adversarial",
    "CrossDomain",
    "Curated",
    "FusionContext",
    "Generator",
    "Rows",
    "SingleDomain",
    "fusion_generators",
    "register",
]
