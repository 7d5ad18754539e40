"""Domain and language templates: data files (YAML) that steer every generation prompt.

A domain template (`domains/<name>.yaml`) says who the teacher is in that domain, what to stress, which
subtopics to cover, and the mixes of query types, complexity and document length. A language template
(`languages/<code>.yaml`) says how to write in that language, in English and in the language itself.

Users add their own by dropping a file into a folder with the same layout (`domains/`, `languages/`)
named by `generation.templates_dir` or by `DISTILL_TEMPLATES_DIR` (several folders: separated by the
OS path separator). A user file overrides a packaged one of the same name. The file's stem is its name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from distiller.config import GenerationConfig, load_yaml
from distiller.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
ENV_VAR = "DISTILL_TEMPLATES_DIR"
DEFAULT_DOMAIN = "general"

Kind = Literal["domains", "languages"]
COMPLEXITIES = ("simple", "intermediate", "complex")
LENGTHS = ("short", "medium", "long")


def _normalised(mix: dict[str, float], allowed: Iterable[str] | None, what: str) -> dict[str, float]:
    """Weights -> shares summing to 1, so a user may write 3/2/1 as well as 0.5/0.33/0.17."""
    if not mix:
        raise ValueError(f"{what} must name at least one entry")
    if allowed is not None and (unknown := sorted(set(mix) - set(allowed))):
        raise ValueError(f"{what}: unknown entries {unknown} (allowed: {', '.join(allowed)})")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"{what}: weights must be >= 0 and not all 0")
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items() if v > 0}


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="", description="The file it was read from (not part of its fingerprint).")

    def fingerprint(self) -> str:
        """What the prompts depend on: its content, not where it lives."""
        payload = self.model_dump(mode="json", exclude={"source"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class DomainTemplate(Template):
    name: str
    description: str
    persona: str = Field(description="Who the teacher is, e.g. 'an experienced lawyer and legal educator'.")
    instructions: str = Field(default="", description="What to stress and what to avoid in this domain.")
    subtopics: list[str] = Field(default_factory=list, description="Spread concept batches over these.")
    concept_categories: list[str] = Field(default_factory=list)
    relationship_types: list[str] = Field(
        default_factory=lambda: ["is_a", "part_of", "requires", "contrasts_with", "causes", "exception_to"]
    )
    query_types: dict[str, float] = Field(
        default_factory=lambda: {"factual": 0.35, "procedural": 0.25, "comparative": 0.2, "scenario": 0.2}
    )
    query_patterns: dict[str, list[str]] = Field(
        default_factory=dict, description="Query type -> example shapes of a query of that type."
    )
    answer_types: list[str] = Field(
        default_factory=lambda: ["definition", "explanation", "procedure", "list", "yes_no", "comparison"]
    )
    complexity_mix: dict[str, float] = Field(
        default_factory=lambda: {"simple": 0.3, "intermediate": 0.45, "complex": 0.25}
    )
    length_mix: dict[str, float] = Field(default_factory=lambda: {"short": 0.3, "medium": 0.5, "long": 0.2})
    length_words: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"short": (40, 80), "medium": (100, 180), "long": (220, 350)},
        description="Target words of a generated document of each length.",
    )

    @field_validator("query_types", "complexity_mix", "length_mix")
    @classmethod
    def _mixes(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        allowed = {"complexity_mix": COMPLEXITIES, "length_mix": LENGTHS}.get(info.field_name or "")
        return _normalised(v, allowed, info.field_name or "mix")

    @field_validator("length_words")
    @classmethod
    def _words(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        if missing := [k for k in LENGTHS if k not in v]:
            raise ValueError(f"length_words needs {', '.join(missing)}")
        if bad := [k for k, (lo, hi) in v.items() if not 0 < lo <= hi]:
            raise ValueError(f"length_words: need 0 < min <= max for {', '.join(bad)}")
        return v


class LanguageTemplate(Template):
    code: str
    name: str = Field(description="In English, e.g. 'German'.")
    native_name: str = Field(description="In the language itself, e.g. 'Deutsch'.")
    instruction: str = Field(description="How to write in this language, in English (the prompts' language).")
    native_instruction: str = Field(description="The same instruction in the language itself.")
    examples: dict[str, str] = Field(
        default_factory=dict, description="Query type -> an example query written in this language."
    )


T = TypeVar("T", bound=Template)


class UnknownTemplateError(ConfigError):
    """A template or language that no folder has; the message lists the known ones."""


def template_dirs(extra: str | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: the config's folder, then the environment's,
    then the package."""
    dirs: list[Path] = []
    if extra:
        dirs.append(Path(extra).expanduser())
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    dirs.append(PACKAGE_DIR)
    return dirs


def available(kind: Kind, extra: str | None = None) -> dict[str, Path]:
    """name -> file, for every template of this kind in every folder (a user's file shadows the package's)."""
    found: dict[str, Path] = {}
    for d in template_dirs(extra):
        sub = d / kind
        if not sub.is_dir():
            continue
        for p in sorted([*sub.glob("*.yaml"), *sub.glob("*.yml")]):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def _load(kind: Kind, name: str, model: type[T], extra: str | None, what: str) -> T:
    files = available(kind, extra)
    path = files.get(name)
    if path is None:
        known = ", ".join(files) or "(none)"
        where = ", ".join(str(d / kind) for d in template_dirs(extra))
        raise UnknownTemplateError(
            f"unknown {what} {name!r}; known: {known}. Add one as {kind}/{name}.yaml in a folder named by "
            f"generation.templates_dir or {ENV_VAR} (looked in: {where})"
        )
    return read_template(path, model)


def read_template(path: Path, model: type[T]) -> T:
    data = load_yaml(path)
    stem_key = "code" if model is LanguageTemplate else "name"
    data.setdefault(stem_key, path.stem)
    try:
        return model.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{path}: invalid {model.__name__}: {problems}") from None


def load_domain(name: str, extra: str | None = None) -> DomainTemplate:
    return _load("domains", name, DomainTemplate, extra, "template")


def load_language(code: str, extra: str | None = None) -> LanguageTemplate:
    return _load("languages", code, LanguageTemplate, extra, "language")


def list_domains(extra: str | None = None) -> list[DomainTemplate]:
    return [read_template(p, DomainTemplate) for p in available("domains", extra).values()]


def list_languages(extra: str | None = None) -> list[LanguageTemplate]:
    return [read_template(p, LanguageTemplate) for p in available("languages", extra).values()]


def domain_for(gen: GenerationConfig) -> DomainTemplate:
    """The run's domain template, with the config's mixes laid over it.

    `generation.template` when set (unknown: an error); else the template named like the domain, when
    there is one; else the general template (a domain of any name works, steered by its name alone)."""
    if gen.template:
        name = gen.template
    elif gen.domain and gen.domain in available("domains", gen.templates_dir):
        name = gen.domain
    else:
        name = DEFAULT_DOMAIN
    tpl = load_domain(name, gen.templates_dir)
    overrides = {
        k: v
        for k, v in (
            ("complexity_mix", gen.complexity_mix),
            ("length_mix", gen.length_mix),
            ("query_types", gen.query_types),
        )
        if v
    }
    if not overrides:
        return tpl
    try:
        return DomainTemplate.model_validate({**tpl.model_dump(), **overrides})
    except ValidationError as e:
        raise ConfigError(f"generation: {e.errors()[0]['msg']}") from None


def language_for(gen: GenerationConfig) -> LanguageTemplate:
    return load_language(gen.language, gen.templates_dir)


__all__ = [
    "COMPLEXITIES",
    "DEFAULT_DOMAIN",
    "ENV_VAR",
    "LENGTHS",
    "DomainTemplate",
    "LanguageTemplate",
    "UnknownTemplateError",
    "available",
    "domain_for",
    "language_for",
    "list_domains",
    "list_languages",
    "load_domain",
    "load_language",
    "read_template",
    "template_dirs",
]
