"""Every prompt the product sends, in one place: one module per task, each prompt versioned with its
answer schema.

- `concepts`: the bootstrap knowledge base (concepts, then relationships among them).
- `queries`: search queries from a concept or from a chunk.
- `qa`: grounded question-answer pairs from a chunk.
- `documents`: positives and contrastive negatives for a query.
- `judge`: the validation judge (Q&A pairs and queries).

Conventions, and why:
- The system prompt holds the instructions, which are the same for every row of a run; the user prompt
  starts with the row's own material. Providers cache a shared prompt prefix, and a prompt that opens
  with its row tells the rows apart at a glance (in logs, and for the loopback test server's stubs).
- Prompts are written in English and tell the model, in English and in the language itself, to write
  every piece of content in the run's language (the language template); JSON keys and fixed labels stay
  English, so parsing does not depend on the language.
- A prompt's text and schema are all the call cache keys on (with the model and sampling parameters), so
  editing one prompt invalidates exactly the calls made with it. `version` is bumped with every edit so
  that rows and manifests say which prompt made them; `fingerprint()` goes into stage keys, so a stage
  whose prompts changed is re-run (its unchanged calls still come from the call cache).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from distiller.llm.types import LLMRequest
from distiller.templates import COMPLEXITIES, DomainTemplate, LanguageTemplate

COMPLEXITY_GUIDE = {
    "simple": "one fact or definition; a short query (about 3-10 words)",
    "intermediate": "needs an explanation, conditions or a few steps; one clear information need",
    "complex": "combines several aspects, conditions or concepts, or asks for reasoning about a situation",
}


@dataclass(frozen=True)
class Prompt:
    """One versioned prompt: system and user templates (`str.format` fields) and the answer's schema."""

    name: str
    version: int
    system: str
    user: str
    schema: type[BaseModel]
    temperature: float | None = None
    """None: the endpoint's temperature. The judge uses 0: a verdict should not depend on the dice."""

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}"

    def render(self, values: dict[str, Any]) -> tuple[str, str]:
        """(system, user). A missing field raises KeyError: a prompt never goes out half-filled."""
        return self.system.format_map(values), self.user.format_map(values)

    def request(
        self, item_id: str, stage: str, values: dict[str, Any], *, max_tokens: int | None = None
    ) -> LLMRequest:
        system, user = self.render(values)
        return LLMRequest.build(
            item_id,
            stage,
            self.schema,
            system=system,
            user=user,
            max_tokens=max_tokens,
            temperature=self.temperature,
        )

    def fingerprint(self) -> str:
        payload = [self.name, self.version, self.system, self.user, self.temperature]
        payload.append(json.dumps(self.schema.model_json_schema(), sort_keys=True))
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def fingerprint(*prompts: Prompt) -> str:
    return hashlib.sha256("|".join(p.fingerprint() for p in prompts).encode()).hexdigest()[:16]


def numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))


def quoted(text: str) -> str:
    """Row material inside triple quotes, so instructions and content cannot be confused."""
    return f'"""\n{text.strip()}\n"""'


def context(domain_name: str, domain: DomainTemplate, language: LanguageTemplate) -> dict[str, Any]:
    """The fields every prompt may use: who writes, about what, in which language, and with which labels."""
    guidance = domain.description.strip()
    if domain.instructions.strip():
        guidance += "\n" + domain.instructions.strip()
    type_lines = []
    for qtype in domain.query_types:
        shapes = list(domain.query_patterns.get(qtype, []))
        if qtype in language.examples:
            shapes.append(language.examples[qtype])
        shown = "; ".join(f'"{s}"' for s in shapes[:3])
        type_lines.append(f"- {qtype}" + (f": e.g. {shown}" if shown else ""))
    return {
        "domain": domain_name,
        "persona": domain.persona,
        "domain_guidance": guidance,
        "language_name": language.name,
        "language_block": (
            f"Language: {language.name} ({language.native_name}). {language.instruction.strip()}\n"
            f"{language.native_instruction.strip()}"
        ),
        "query_type_lines": "\n".join(type_lines),
        "complexity_lines": "\n".join(f"- {c}: {COMPLEXITY_GUIDE[c]}" for c in COMPLEXITIES),
        "answer_types": ", ".join(domain.answer_types),
        "categories": ", ".join(domain.concept_categories) or "any short label",
        "relationship_types": ", ".join(domain.relationship_types),
    }


__all__ = ["COMPLEXITY_GUIDE", "Prompt", "context", "fingerprint", "numbered", "quoted"]
