"""Retention evaluation: is the fused student as good on each domain as a specialist, and better across?

- Per domain, on that domain's held-out (test) queries over that domain's own corpus: the base model, the
  specialist (the single-domain pipeline on that domain: same queries, same mining and training settings,
  that domain only) and each fused student. Domain Expertise Retention DER = fused / specialist per
  metric (1.0: nothing lost by sharing the model).
- Cross-Domain Accuracy on the held-out cross-domain queries, over the union corpus: a hit needs a
  passage of each of the query's domains in the top 10.
- Integration Coherence: the judge's approval rate of a sample of integrated answers (judged against all
  their passages in the fusion data stage, under the validation budget), with its 95% Wilson interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distiller.records import Passage, Query
from distiller.retrieval.evaluation import evaluate_model
from distiller.retrieval.index import EncodedCorpus, encode_corpus, scratch_dir, search_batches

from .records import RetentionRow

CROSS_K = 10
SHOWN = ("MRR@5", "nDCG@10", "Recall@10")


def cross_domain_accuracy(
    model: Any,
    passages: Sequence[Passage],
    queries: Sequence[Query],
    k: int = CROSS_K,
    *,
    corpus: EncodedCorpus | None = None,
) -> float:
    """Share of queries whose top k hold a positive of every domain among their positives. `corpus`: the
    passages already encoded by this same model (one row per passage, in order); encoded here otherwise."""
    if not queries:
        return 0.0
    domain_of = {p.passage_id: p.passage_id.split(":", 1)[0] for p in passages}
    hits = 0
    with scratch_dir() as work:
        if corpus is None:
            corpus = encode_corpus(model, [p.text for p in passages], 64, workdir=work)
        for off, _, idx, _ in search_batches(model, corpus, [q.text for q in queries], k, 64):
            for row, ids in enumerate(idx):
                q = queries[off + row]
                top = {passages[i].passage_id for i in ids if i >= 0}
                need = {domain_of[p] for p in q.positive_ids if p in domain_of}
                got = {domain_of[p] for p in q.positive_ids if p in top}
                hits += bool(need) and need <= got
    return hits / len(queries)


def cross_domain_rows(
    model: Any,
    passages: Sequence[Passage],
    queries: Sequence[Query],
    strategy: str,
    label: str,
    *,
    corpus: EncodedCorpus | None = None,
) -> list[RetentionRow]:
    """The model's Cross-Domain Accuracy@10 as a report row (none without held-out cross-domain queries)."""
    if not queries:
        return []
    acc = cross_domain_accuracy(model, passages, queries, corpus=corpus)
    return [
        RetentionRow(
            strategy=strategy,
            domain="cross",
            model=label,
            metric=f"CrossDomainAcc@{CROSS_K}",
            value=acc,
            n_queries=len(queries),
        )
    ]


def domain_rows(
    model: Any,
    passages: list[Passage],
    queries: list[Query],
    ks: list[int],
    domain: str,
    label: str,
    strategy: str,
    *,
    corpus: EncodedCorpus | None = None,
) -> list[RetentionRow]:
    """The model's metrics on `queries` over `passages` (`corpus`: those passages already encoded by this
    model, e.g. a domain's rows of the union corpus's encoding, so that one encoding serves every domain
    and the cross-domain accuracy)."""
    return [
        RetentionRow(
            strategy=strategy,
            domain=domain,
            model=label,
            metric=r.metric,
            value=r.value,
            n_queries=r.n_queries,
        )
        for r in evaluate_model(model, passages, queries, ks, label, 0, corpus=corpus)
    ]


def der_rows(rows: Sequence[RetentionRow]) -> list[RetentionRow]:
    """DER = fused / specialist for every (strategy, domain, metric) both have."""
    spec = {(r.domain, r.metric): r for r in rows if r.model == "specialist"}
    out = []
    for r in rows:
        s = spec.get((r.domain, r.metric))
        if r.model == "fused" and s is not None:
            value = r.value / s.value if s.value > 0 else (1.0 if r.value == 0 else float("inf"))
            out.append(r.model_copy(update={"model": "DER", "value": value}))
    return out


def _val(rows: Sequence[RetentionRow], **match: str) -> float | None:
    for r in rows:
        if all(getattr(r, k) == v for k, v in match.items()):
            return r.value
    return None


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def retention_markdown(
    rows: Sequence[RetentionRow], coherence: dict[str, Any] | None, metrics: Sequence[str] = SHOWN
) -> str:
    """One table per strategy: per domain and metric base, specialist, fused, DER; then cross-domain
    accuracy and integration coherence."""
    strategies = list(dict.fromkeys(r.strategy for r in rows if r.model == "fused"))
    domains = list(dict.fromkeys(r.domain for r in rows if r.domain != "cross"))
    lines = ["## Multi-domain fusion: retention", ""]
    for s in strategies:
        lines += [
            f"### Strategy `{s}`",
            "",
            "| domain | metric | base | specialist | fused | DER |",
            "|---|---|---|---|---|---|",
        ]
        for d in domains:
            for m in metrics:
                if _val(rows, domain=d, metric=m, model="base") is None:
                    continue
                lines.append(
                    f"| {d} | {m} | {_f(_val(rows, domain=d, metric=m, model='base'))} | "
                    f"{_f(_val(rows, domain=d, metric=m, model='specialist'))} | "
                    f"{_f(_val(rows, domain=d, metric=m, model='fused', strategy=s))} | "
                    f"{_f(_val(rows, domain=d, metric=m, model='DER', strategy=s))} |"
                )
        cross_f = _val(rows, domain="cross", model="fused", strategy=s)
        cross_b = _val(rows, domain="cross", model="base")
        n_cross = next((r.n_queries for r in rows if r.domain == "cross"), 0)
        lines += [
            "",
            f"Cross-Domain Accuracy (top {CROSS_K} holds a passage of each domain, {n_cross} held-out "
            f"cross-domain queries): base {_f(cross_b)}, fused {_f(cross_f)}",
            "",
        ]
    if coherence and coherence.get("judged"):
        lo, hi = coherence["ci95"]
        lines.append(
            f"Integration Coherence: {100 * coherence['rate']:.1f}% "
            f"(95% Wilson CI {100 * lo:.1f}-{100 * hi:.1f}%) "
            f"of {coherence['judged']} integrated answers judged"
        )
    else:
        lines.append(
            f"Integration Coherence: not judged ({(coherence or {}).get('why', 'no integrated answers')})"
        )
    return "\n".join(lines) + "\n"


def retention_html(run_dir: Any) -> str:
    """The retention section for the run's HTML report ('' when the run has none)."""
    from pathlib import Path

    import markdown_it

    path = Path(run_dir) / "retention.md"
    if not path.is_file():
        return ""
    return (
        markdown_it.MarkdownIt("commonmark", {"html": False})
        .enable("table")
        .render(path.read_text(encoding="utf-8"))
    )


__all__ = ["cross_domain_accuracy", "der_rows", "domain_rows", "retention_html", "retention_markdown"]
