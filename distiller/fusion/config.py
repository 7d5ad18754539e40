"""The configuration of a multi-domain fusion run (`distill fuse -c fusion.yaml`).

A fusion run is one `DistillConfig` per domain (the `base` settings with the domain's source, teacher and
budget share laid over them) plus the `fusion:` section, which says how the domains are mixed: extra
generators (cross-domain, adversarial, curated), how cross-domain answers are integrated, and how the one
student is trained. Every mistake in a domain entry is reported with the domain's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distiller.config import DistillConfig, LLMConfig, _deep_merge, _format_validation_error, load_yaml
from distiller.errors import ConfigError

Strategy = Literal["multitask", "sequential", "integration"]
STRATEGIES: tuple[str, ...] = ("multitask", "sequential", "integration")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DomainSpec(_Section):
    """One domain: a name, a line describing it, exactly one source, and optional own teacher and budget."""

    name: str = Field(
        title="Name",
        description="Short identifier (letters, digits, '-', '_'): the sub-run folder and the rows' "
        "domain tag.",
    )
    description: str = Field(
        default="", title="Description", description="One line on what the domain covers (shown to teachers)."
    )
    paths: list[str] = Field(
        default_factory=list,
        title="Documents",
        description="Document mode: files, folders or globs of the domain's documents (like input.paths).",
    )
    qa_file: str | None = Field(
        default=None, title="Q&A file", description="Labeled mode: the domain's question/answer file."
    )
    bootstrap: str | None = Field(
        default=None,
        title="Bootstrap domain",
        description="Bootstrap mode: a domain name the teacher writes a knowledge base for (needs an LLM).",
    )
    teacher: LLMConfig | None = Field(
        default=None,
        title="Teacher",
        description="This domain's own teacher (provider, model, base_url, prices); default: base.teacher.",
    )
    budget_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        title="Budget share",
        description="Fraction of base.budget.run_usd this domain may spend; unset: an equal part of what "
        "the explicit shares and fusion.budget_share leave.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        title="Other settings",
        description="Any DistillConfig sections laid over base for this domain, e.g. "
        "{input: {group_column: focus}, generation: {template: medical}}.",
    )

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"domain name {v!r} must be letters, digits, '-' or '_' (it names a folder)")
        return v

    @property
    def source(self) -> Literal["documents", "labeled", "bootstrap"]:
        return "labeled" if self.qa_file else "bootstrap" if self.bootstrap else "documents"


class FusionSection(_Section):
    """How the domains are mixed into one student."""

    cross_domain_ratio: float = Field(
        default=0.2,
        ge=0.0,
        le=2.0,
        title="Cross-domain ratio",
        description="Cross-domain queries per single-domain training query (a query needing a passage of "
        "two domains).",
    )
    adversarial_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=2.0,
        title="Adversarial ratio",
        description="Adversarial queries (read like domain A, answered by domain B) per single-domain "
        "training query.",
    )
    integration: Literal["concat", "llm"] = Field(
        default="concat",
        title="Integration",
        description="How each domain teacher's answer to a cross-domain question is merged: 'concat' "
        "(sections per domain, no LLM) or 'llm' (an integrator writes one answer and records "
        "contributions and resolved contradictions).",
    )
    integrator: LLMConfig | None = Field(
        default=None, title="Integrator", description="integration: llm: its endpoint; default base.teacher."
    )
    strategy: Strategy | list[Strategy] = Field(
        default="multitask",
        title="Strategy",
        description="multitask (each batch from one domain), sequential (domains in order, with replay) or "
        "integration (per-domain data, then cross-domain); a list trains and compares each, the first is "
        "the run's fused model.",
    )
    sampler: Literal["proportional", "round_robin"] = Field(
        default="proportional",
        title="Batch sampler",
        description="multitask/integration: sentence-transformers' multi-dataset batch sampler.",
    )
    order: list[str] | None = Field(
        default=None,
        title="Order",
        description="sequential: domain names, general first, specialised last; default the domains' order.",
    )
    replay_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        title="Replay share",
        description="sequential/integration: easy triplets of earlier phases replayed, as a fraction of "
        "the current phase's rows.",
    )
    mask_shared_answers: bool = Field(
        default=True,
        title="Mask shared answers",
        description="Leave out of each query's in-batch negatives the passages of its own answer unit "
        "(another query's positive that answers it too: claims citing one abstract, each abstract chunk a "
        "positive); they taught the student to push claims away from their abstracts (benchmarks/README.md).",
    )
    anchor_weight: float = Field(
        default=10.0,
        ge=0.0,
        title="Anchor weight",
        description="Weight of a term pulling the fused student's embeddings of its training texts toward "
        "the base model's (0: none): keeps what the base already did well in a domain that the others' "
        "training would move. 10: on MedQuAD + SciFact science stayed at the base instead of 0.03 below, "
        "medicine kept most of its gain (benchmarks/README.md).",
    )
    anchor_sample: int = Field(
        default=0,
        ge=0,
        title="Anchor sample",
        description="With an anchor weight: training texts of every domain (drawn evenly, seeded) added to "
        "each step's anchor term, one extra forward over them per step (0: only the batch's own texts). A "
        "batch comes from one domain; these hold the other domains' embeddings while it trains. Off: 16 at "
        "anchor weight 10 did not lift science above the base and cost medicine (benchmarks/README.md).",
    )
    curated_file: str | None = Field(
        default=None,
        title="Curated file",
        description="Your own examples (.jsonl/.json/.csv/.parquet with question, answer and optionally "
        "domain), passed through unchanged and marked curated.",
    )
    budget_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        title="Fusion budget share",
        description="Fraction of base.budget.run_usd for the fusion stages (cross-domain generation, "
        "integration, coherence judge).",
    )
    coherence_sample: int = Field(
        default=20,
        ge=0,
        title="Coherence sample",
        description="Integrated answers judged for Integration Coherence (under the fusion budget).",
    )
    specialists: bool = Field(
        default=True,
        title="Specialists",
        description="Train one specialist per domain (its triplets only, same settings) for DER.",
    )

    @property
    def strategies(self) -> list[str]:
        s = self.strategy if isinstance(self.strategy, list) else [self.strategy]
        return list(dict.fromkeys(s))


class FusionConfig(_Section):
    """Everything `distill fuse` needs: base settings, the domains, the fusion section."""

    run_name: str = Field(
        default="fusion", title="Run name", description="Folder of the fused run under base.runs_dir."
    )
    base: DistillConfig = Field(
        default_factory=DistillConfig,
        title="Base settings",
        description="The DistillConfig every domain starts from (teacher, budget, training, mining, ...).",
    )
    domains: list[DomainSpec] = Field(title="Domains", description="Two or more domains to fuse.")
    fusion: FusionSection = Field(
        default_factory=FusionSection, title="Fusion", description="How to mix them."
    )

    @model_validator(mode="after")
    def _check(self) -> FusionConfig:
        if len(self.domains) < 2:
            raise ValueError(f"fusion needs at least two domains, got {len(self.domains)}")
        seen: set[str] = set()
        for d in self.domains:
            if d.name in seen:
                raise ValueError(f"domain {d.name!r}: two domains have this name")
            seen.add(d.name)
            sources = [
                s for s, v in (("paths", d.paths), ("qa_file", d.qa_file), ("bootstrap", d.bootstrap)) if v
            ]
            if len(sources) != 1:
                raise ValueError(
                    f"domain {d.name!r}: give exactly one source (paths, qa_file or bootstrap), got "
                    + (", ".join(sources) if sources else "none")
                )
        if self.fusion.order is not None:
            unknown = [n for n in self.fusion.order if n not in seen]
            if unknown or sorted(self.fusion.order) != sorted(seen):
                raise ValueError(
                    f"fusion.order must list every domain once ({', '.join(sorted(seen))}); "
                    f"got {', '.join(self.fusion.order)}"
                )
        shares(self)  # raises when the shares add up past 1
        return self

    def domain(self, name: str) -> DomainSpec:
        return next(d for d in self.domains if d.name == name)

    @property
    def fused_run_dir(self) -> Path:
        return self.base.runs_path / self.run_name


def shares(cfg: FusionConfig) -> dict[str, float]:
    """Each domain's fraction of the run budget (and 'fusion'): explicit shares as given, the rest split
    equally among domains without one. They must not add up past 1."""
    explicit = {d.name: d.budget_share for d in cfg.domains if d.budget_share is not None}
    fixed = sum(explicit.values()) + cfg.fusion.budget_share
    if fixed > 1.0 + 1e-9:
        parts = ", ".join(f"{k} {v:g}" for k, v in explicit.items())
        raise ValueError(
            f"budget shares add up to {fixed:g} > 1 (domains: {parts or 'none'}; "
            f"fusion {cfg.fusion.budget_share:g})"
        )
    free = [d.name for d in cfg.domains if d.budget_share is None]
    rest = max(0.0, 1.0 - fixed)
    out = {**explicit, **{n: rest / len(free) for n in free}} if free else dict(explicit)
    out["fusion"] = cfg.fusion.budget_share
    return out


def _domain_errors(err: ValidationError, data: dict[str, Any]) -> str | None:
    """Name the domain (not just its list index) in an error about a domain entry."""
    raw = data.get("domains")
    domains: list[Any] = raw if isinstance(raw, list) else []
    lines = []
    for e in err.errors():
        loc = e["loc"]
        if len(loc) >= 2 and loc[0] == "domains" and isinstance(loc[1], int) and loc[1] < len(domains):
            entry = domains[loc[1]]
            name = entry.get("name", f"#{loc[1] + 1}") if isinstance(entry, dict) else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:]) or "(entry)"
            lines.append(f"domain {name!r}: {field}: {e['msg']}")
    return "\n".join(lines) if lines else None


def load_fusion_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> FusionConfig:
    """Read fusion.yaml (errors name the file, line and domain); relative paths are the caller's."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = _deep_merge(data, overrides or {})
    source = str(path) if path else "flags"
    try:
        return FusionConfig(**data)
    except ValidationError as e:
        root = yaml.compose(Path(path).read_text(encoding="utf-8")) if path else None
        named = _domain_errors(e, data)
        msg = _format_validation_error(e, source, root)
        raise ConfigError(msg + ("\n" + named if named else "")) from e


def check_sources(cfg: FusionConfig) -> None:
    """Files must exist before anything runs: one line naming the domain and the file."""
    from distiller.ingest.readers import expand_inputs

    for d in cfg.domains:
        if d.qa_file and not Path(d.qa_file).is_file():
            raise ConfigError(f"domain {d.name!r}: qa_file {d.qa_file}: no such file")
        if d.paths:
            files, _ = expand_inputs(d.paths)
            if not files:
                raise ConfigError(f"domain {d.name!r}: no documents found in {', '.join(d.paths)}")
    if cfg.fusion.curated_file and not Path(cfg.fusion.curated_file).is_file():
        raise ConfigError(f"fusion.curated_file {cfg.fusion.curated_file}: no such file")


__all__ = [
    "STRATEGIES",
    "DomainSpec",
    "FusionConfig",
    "FusionSection",
    "check_sources",
    "load_fusion_config",
    "shares",
]
