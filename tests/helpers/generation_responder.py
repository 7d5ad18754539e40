"""A scripted teacher for the loopback LLM server: it reads each prompt (which task, which language, the
row's material, the slots asked for) and answers schema-valid JSON derived from it, the way a real model
would shape its answer. Tests program it to answer badly on purpose (`bad`), and count what it saw.

Language: it writes German when the system prompt asks for Deutsch (and English otherwise), so a test can
tell that the run's language reached the prompts.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from distiller.testing.llm_server import ChatRequest

WORDS = {
    "en": {
        "query": "What does {x} mean in practice",
        "doc": "In practice {x} is described in detail here",
        "neg": "A neighbouring matter unlike {x} is described here",
        "answer": "{x} is explained by the source",
        "concept": "Principle",
        "filler": "and the text continues with details",
    },
    "de": {
        "query": "Was bedeutet {x} in der Praxis",
        "doc": "In der Praxis wird {x} hier ausführlich beschrieben",
        "neg": "Eine benachbarte Frage anders als {x} wird hier beschrieben",
        "answer": "{x} wird von der Quelle erklärt",
        "concept": "Grundsatz",
        "filler": "und der Text fährt mit Einzelheiten fort",
    },
}


def language(req: ChatRequest) -> str:
    system = req.messages[0]["content"] if req.messages and req.messages[0]["role"] == "system" else ""
    return "de" if "(Deutsch)" in system else "en"


def _line(text: str, label: str) -> str:
    m = re.search(rf"^{re.escape(label)}\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def _slots(text: str, key: str) -> list[str]:
    return re.findall(rf"^\d+\. {key}: ([\w-]+)", text, re.MULTILINE)


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


BANK = [
    *("deposit", "tenancy", "appeal", "verdict", "liability", "contract", "damages", "statute", "custody"),
    *("estate", "patent", "merger", "insolvency", "pension", "dividend", "mortgage", "invoice", "audit"),
    *("warranty", "trademark", "eviction", "inheritance", "license", "dismissal", "overtime"),
    *("arbitration", "injunction", "subsidy", "tariff", "levy"),
]


def _topic(text: str, k: int = 3) -> str:
    """k words picked by the text's hash: texts of different rows read differently, as a real model's do."""
    h = _h(text)
    return " ".join(BANK[(h >> (5 * i)) % len(BANK)] for i in range(k))


def _words(sentence: str, lo_hi: str, filler: str) -> str:
    lo = int(lo_hi.split("-")[0]) if lo_hi else 20
    out = sentence
    while len(out.split()) < lo:
        out += " " + filler
    return out + "."


class ScriptedTeacher:
    """`responder(req)`; `bad(req) -> 'malformed' | 'wrong_schema' | None` answers garbage on purpose."""

    def __init__(self, reject_every: int = 5, duplicate_queries: bool = True) -> None:
        self.reject_every = reject_every
        self.duplicate_queries = duplicate_queries
        self.seen: Counter[str] = Counter()
        self.bad: Callable[[ChatRequest], str | None] | None = None

    def __call__(self, req: ChatRequest) -> Any:
        name = req.schema_name or ""
        self.seen[name] += 1
        if self.bad is not None and (kind := self.bad(req)):
            if kind == "malformed":
                return '{"this JSON": "never ends'
            return {"unexpected_field": "not the schema"}
        w = WORDS[language(req)]
        user = req.first_user
        return getattr(self, f"_{name}")(user, w)

    # -- bootstrap -----------------------------------------------------------------------------------
    def _ConceptBatch(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        m = re.match(r"Batch (\d+)\.(\d+)\. Focus: (.+)", user)
        assert m, user[:80]
        label, focus = f"{m.group(1)}.{m.group(2)}", re.sub(r"\W+", " ", m.group(3)).strip()[:30]
        n = int(re.search(r"Give (\d+) new", user).group(1))  # type: ignore[union-attr]
        items = [
            {
                "term": f"{w['concept']} {focus} {label}-{j}",
                "definition": f"{w['answer'].format(x=focus)} ({label}-{j}).",
                "example": f"{focus} {j}",
                "category": "doctrine",
                "related_terms": [focus],
            }
            for j in range(n)
        ]
        # A real model repeats itself now and then: the first term again, in other case and spacing.
        items.append({**items[0], "term": "  " + items[0]["term"].upper() + " "})
        return {"concepts": items}

    def _RelationshipBatch(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        terms = [t.strip() for t in _line(user, "Concepts:").split(";") if t.strip()]
        rels = [
            {"source": a, "target": b, "type": "Contrasts With", "description": f"{a} / {b}", "examples": [a]}
            for a, b in itertools.pairwise(terms)
        ][:2]
        rels.append({"source": terms[0], "target": "a term nobody defined", "type": "x", "description": "?"})
        return {"relationships": rels}

    # -- generation ----------------------------------------------------------------------------------
    def _QueryBatch(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        subject = _line(user, "Concept:") or _line(user, "Relationship:") or _line(user, "Passage (from")
        subject = subject.rstrip("):")
        slots = re.findall(r"^\d+\. complexity: (\w+); type: (\w+)", user, re.MULTILINE)
        queries = []
        for i, (cx, qt) in enumerate(slots):
            text = f"{w['query'].format(x=_topic(f'{subject}|{i}'))} ({qt}, {cx})?"
            if self.duplicate_queries and i == 1:
                text = f"{w['query'].format(x='something everyone asks')}?"  # the same in every batch
            queries.append(
                {
                    "text": text,
                    "complexity": cx,
                    "query_type": qt,
                    "answer_type": "explanation",
                    "key_concepts": [subject[:40]],
                }
            )
        return {"queries": queries}

    def _QABatch(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        source = _line(user, "Passage (from").rstrip("):")
        passage = user.split('"""')[1].strip() if '"""' in user else ""
        first = passage.split(".")[0][:120]
        pairs = [
            {
                "question": f"{w['query'].format(x=source)} #{i}?",
                "answer": f"{first}.",
                "reasoning": f"{w['answer'].format(x=source)}.",
                "difficulty": d,
            }
            for i, d in enumerate(_slots(user, "difficulty"))
        ]
        return {"pairs": pairs}

    def _negatives(self, user: str, w: dict[str, str], query: str) -> list[dict[str, Any]]:
        words = re.search(r"negative document\(s\), each of ([\d-]+) words", user)
        strategies = re.findall(r"^\d+\. ([a-z_]+)$", user, re.MULTILINE)
        return [
            {
                "strategy": s,
                "text": _words(f"{w['neg'].format(x=query)} ({s})", words[1] if words else "", w["filler"]),
                "explanation": f"{s}: it does not answer {query}",
            }
            for s in strategies
        ]

    def _DocumentSet(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        query = _line(user, "Query:")
        n_pos = int(re.search(r"Write (\d+) positive", user).group(1))  # type: ignore[union-attr]
        words = re.search(r"positive document\(s\), each of ([\d-]+) words", user).group(1)  # type: ignore[union-attr]
        return {
            "answer": w["answer"].format(x=query),
            "reasoning": f"{w['doc'].format(x=query)}.",
            "positives": [
                {"text": _words(f"{w['doc'].format(x=query)} ({j})", words, w["filler"])}
                for j in range(n_pos)
            ],
            "negatives": self._negatives(user, w, query),
        }

    def _NegativeSet(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        return {"negatives": self._negatives(user, w, _line(user, "Query:"))}

    # -- judge ---------------------------------------------------------------------------------------
    def _Verdict(self, user: str, w: dict[str, str]) -> dict[str, Any]:
        reject = self.reject_every > 0 and _h(user) % self.reject_every == 0
        return {
            "analysis": "Not supported by the source." if reject else "Supported by the source.",
            "grounded": not reject,
            "no_hallucination": True,
            "complete": True,
            "factually_correct": True,
            "problems": ["claim not in the source"] if reject else [],
            "verdict": "reject" if reject else "approve",
        }


__all__ = ["TEXT", "WORDS", "ScriptedTeacher", "language", "llm_run_config", "write_corpus"]


def llm_run_config(server: Any, runs: Any, run_name: str = "t", provider: str = "openai", **sections: Any):
    """A DistillConfig whose teacher is the loopback server (free, so no budget cap bites unless a test
    sets prices), with small generation counts; `sections` are laid over it (dicts merge)."""
    from distiller.config import DistillConfig

    data: dict[str, Any] = {
        "runs_dir": str(runs),
        "run_name": run_name,
        "teacher": server.llm_config(provider).model_dump(),
        "generation": {"concepts": 8, "concepts_per_call": 4, "queries_per_concept": 2},
        "chunking": {"chunk_size": 96},
        "training": {"max_seq_length": 64},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return DistillConfig(**data)


TEXT = {
    "lease.md": "# Residential leases\n\n"
    + "A residential lease is a contract between a landlord and a tenant. The notice period for the tenant "
    "is three months. The landlord may only terminate for a legitimate interest, such as own use. " * 3,
    "deposit.md": "# Security deposits\n\n"
    + "A security deposit may not exceed three months' rent. It must be kept apart from the landlord's "
    "assets and earns interest for the tenant. It is returned after the tenancy ends. " * 3,
    "repairs.md": "# Repairs\n\n"
    + "Minor repairs up to a small amount per case may be passed on to the tenant by contract. Major "
    "repairs are the landlord's duty. The tenant must report defects without delay. " * 3,
    "rent.md": "# Rent increases\n\n"
    + "Rent may be raised to the local comparative rent. The increase needs the tenant's consent and "
    "may not exceed twenty percent within three years. The tenant may terminate early. " * 3,
}


def write_corpus(folder: Any) -> Any:
    """Four small rental-law documents (a few chunks each at chunk_size 96)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TEXT.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
