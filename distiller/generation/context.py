"""What every prompt of a run shares: the domain and language templates, the teacher's name, the seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distiller.config import DistillConfig
from distiller.prompts import context as prompt_context
from distiller.templates import DomainTemplate, LanguageTemplate, domain_for, language_for


@dataclass(frozen=True)
class GenContext:
    cfg: DistillConfig
    domain_name: str
    domain: DomainTemplate
    language: LanguageTemplate
    values: dict[str, Any] = field(repr=False)
    """The prompt fields shared by every row (see `distiller.prompts.context`)."""

    @classmethod
    def from_config(cls, cfg: DistillConfig) -> GenContext:
        gen = cfg.generation
        domain = domain_for(gen)  # raises, listing the known ones, for an unknown template
        language = language_for(gen)
        # Document mode may name no domain: the template's, else the documents speak for themselves.
        name = gen.domain or gen.template or "the documents' subject"
        return cls(cfg, name, domain, language, prompt_context(name, domain, language))

    @property
    def teacher(self) -> str:
        return self.cfg.teacher.model

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def fields(self, **row: Any) -> dict[str, Any]:
        """The shared prompt fields with one row's own laid over them."""
        return {**self.values, **row}


__all__ = ["GenContext"]
