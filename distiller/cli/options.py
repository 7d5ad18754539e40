"""The command line's options: each flag's type and help, declared once, and ONE table from a command's
parameter to the config setting it overrides (`FLAGS`), checked against the config's fields when this
module is imported, so a misspelt setting fails every test that imports the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from distiller.config import DistillConfig

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see README, 'Configuration'). Flags override it."),
]
RunsDirOpt = Annotated[
    str | None, typer.Option("--runs-dir", help="Folder of run folders \\[default: runs].")
]
DomainOpt = Annotated[
    str | None, typer.Option(help="Bootstrap mode (no documents): the domain, e.g. legal, 'maritime law'.")
]
LanguageOpt = Annotated[
    str | None, typer.Option(help="Language of the generated data: en, de, es, fr (distill languages).")
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(help="Domain template (distill templates); default: the domain's own, else general."),
]
ConceptsOpt = Annotated[int | None, typer.Option(help="Bootstrap: concepts to generate (default 50).")]
TeacherOpt = Annotated[
    str | None, typer.Option(help="offline | openai | anthropic (default: offline, no LLM needed).")
]
ModelOpt = Annotated[str | None, typer.Option(help="Teacher model, e.g. gpt-4o-mini.")]
BaseUrlOpt = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama).")
]
InputPriceOpt = Annotated[
    float | None,
    typer.Option(help="Teacher's input price, USD per million tokens (0 for a self-hosted model)."),
]
OutputPriceOpt = Annotated[
    float | None,
    typer.Option(help="Teacher's output price, USD per million tokens \\[default: the price library's]."),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget", help="Hard cap on the run's LLM spend in USD \\[default: 5]; 0 sends nothing."),
]
BudgetPolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--budget-policy",
        help="partial: a budget short of the estimate is split over every LLM step [default]; "
        "strict: refuse to start.",
    ),
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")]
RunNameOpt = Annotated[str | None, typer.Option(help="Run folder name \\[default: from the input's name].")]
ChunkSizeOpt = Annotated[int | None, typer.Option(help="Chunk size in tokens \\[default: 200].")]


def setting_type(model: type[BaseModel], dotted: str) -> Any:
    """The annotation of the setting at `dotted` ("chunking.chunk_size") in `model`; KeyError when
    there is no such setting."""
    node: Any = model
    annotation: Any = None
    for part in dotted.split("."):
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            raise KeyError(f"{dotted!r}: {getattr(node, '__name__', node)} has no setting {part!r}")
        annotation = node.model_fields[part].annotation
        node = annotation
    return annotation


def checked_table(model: type[BaseModel], table: Mapping[str, str]) -> dict[str, str]:
    """`table` (parameter -> dotted setting of `model`) once every setting is known to exist."""
    for dotted in table.values():
        setting_type(model, dotted)
    return dict(table)


FLAGS = checked_table(
    DistillConfig,
    {
        "input": "input.paths",
        "encoding": "input.encoding",
        "qa_file": "input.qa_file",
        "question_column": "input.question_column",
        "answer_column": "input.answer_column",
        "group_column": "input.group_column",
        "chunk_size": "chunking.chunk_size",
        "overlap": "chunking.overlap",
        "domain": "generation.domain",
        "language": "generation.language",
        "template": "generation.template",
        "concepts": "generation.concepts",
        "contrastive": "generation.contrastive",
        "teacher": "teacher.provider",
        "model": "teacher.model",
        "base_url": "teacher.base_url",
        "input_price": "teacher.input_price_per_mtok",
        "output_price": "teacher.output_price_per_mtok",
        "budget": "budget.run_usd",
        "budget_policy": "budget.policy",
        "student": "training.student",
        "epochs": "training.epochs",
        "iterations": "mining.iterations",
        "eval_file": "evaluation.eval_file",
        "export_format": "export.formats",
        "run_name": "run_name",
        "runs_dir": "runs_dir",
        "seed": "seed",
        "runner": "runner",
        "dask_workers": "dask_workers",
        "shard_size": "encoding.shard_size",
        "files_per_shard": "input.files_per_shard",
        "quantize": "encoding.quantize",
    },
)
"""A command's parameter -> the DistillConfig setting it overrides (the same name in every command)."""

NOT_SETTINGS = frozenset({"config", "no_prefect", "json_out"})
"""Parameters of the config-loading commands that are not settings."""


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`data` (nested dicts) with `value` at `dotted`, creating the parents it needs."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def config_overrides(params: Mapping[str, Any], table: Mapping[str, str] = FLAGS) -> dict[str, Any]:
    """The config overrides the given flags make: each parameter of `table` given a value (not None, not
    an empty list) sets its setting; flags left out leave the config file's (or default) value."""
    overrides: dict[str, Any] = {}
    for name, dotted in table.items():
        value = params.get(name)
        if value is None or value == [] or value == ():
            continue
        set_dotted(overrides, dotted, list(value) if isinstance(value, tuple) else value)
    return overrides


__all__ = [
    "FLAGS",
    "NOT_SETTINGS",
    "BaseUrlOpt",
    "BudgetOpt",
    "BudgetPolicyOpt",
    "ChunkSizeOpt",
    "ConceptsOpt",
    "ConfigOpt",
    "DomainOpt",
    "InputPriceOpt",
    "JsonOpt",
    "LanguageOpt",
    "ModelOpt",
    "OutputPriceOpt",
    "RunNameOpt",
    "RunsDirOpt",
    "TeacherOpt",
    "TemplateOpt",
    "checked_table",
    "config_overrides",
    "set_dotted",
    "setting_type",
]
