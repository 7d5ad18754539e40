"""The Prefect "Custom run" form explains itself: for every deployment's flow, every parameter and every
config field has a description and a short title, choices are enums, defaults are shown, and no text
is of the `<name>` kind the UI's Markdown swallows. Also: the README's Configuration section is the
model's, and the export format choices are the exporter's."""

from __future__ import annotations

import importlib
import re
from typing import Any, get_args

import pytest
import yaml
from helpers import ROOT
from prefect.utilities.callables import parameter_schema

from distiller.config import ExportFormat
from distiller.config_docs import render_configuration, update_readme
from distiller.export import FORMATS


def _entrypoints() -> list[str]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return sorted({d["entrypoint"] for d in spec["deployments"]})


def _schema(entrypoint: str) -> dict[str, Any]:
    path, name = entrypoint.split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    return parameter_schema(flow.fn).model_dump_for_openapi()


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref") or next((a["$ref"] for a in node.get("allOf", []) if "$ref" in a), None)
    return schema["definitions"][ref.split("/")[-1]] if ref else node


def _fields(schema: dict) -> list[tuple[str, dict]]:
    """(dotted name, property schema) for every parameter and every field of every model under them."""
    out, seen = [], set()

    def walk(prefix: str, obj: dict) -> None:
        for name, prop in obj.get("properties", {}).items():
            out.append((prefix + name, prop))
            for node in [prop, *prop.get("anyOf", [])]:
                target = _resolve(schema, node)
                if target is not node and id(target) not in seen:
                    seen.add(id(target))
                    walk(f"{prefix}{name}.", target)

    walk("", schema)
    return out


@pytest.mark.parametrize("entrypoint", _entrypoints())
def test_every_field_has_a_description_and_a_short_title(entrypoint: str) -> None:
    schema = _schema(entrypoint)
    fields = _fields(schema)
    assert fields
    # a section's description may sit on its definition (pydantic does not repeat a model's docstring)
    missing = [
        name
        for name, prop in fields
        if not (prop.get("description") or _resolve(schema, prop).get("description") or "").strip()
    ]
    assert not missing, f"{entrypoint}: no description: {missing}"
    long_titles = [name for name, prop in fields if len(prop.get("title", "")) > 24]
    assert not long_titles, long_titles
    eaten = [name for name, prop in fields if re.search(r"<[A-Za-z_]", prop.get("description", ""))]
    assert not eaten, f"Markdown would swallow <...> in {eaten}"


def test_distill_form_choices_defaults_and_first_screen() -> None:
    schema = _schema("flows/distill.py:distill")
    fields = dict(_fields(schema))
    assert list(schema["properties"])[:7] == [
        "input_paths",
        "run_name",
        "teacher_provider",
        "teacher_model",
        "budget_usd",
        "iterations",
        "formats",
    ]
    cfg = _resolve(schema, fields["config"])
    props = {name: prop for name, prop in _fields(schema) if name.startswith("config.")}
    # choices are enums in the form
    for name in ("export.formats", "evaluation.metric", "teacher.provider", "training.loss", "runner"):
        text = str(props[f"config.{name}"])
        assert "enum" in text, name
    assert set(props["config.export.formats"]["items"]["enum"]) == set(FORMATS)
    # simple lists show their defaults (no bare default_factory)
    eval_def = _resolve(schema, props["config.evaluation"])
    assert eval_def["properties"]["ks"]["default"] == [1, 5, 10, 100]
    assert cfg["properties"]["input"]  # the config's own first section is the input
    assert list(cfg["properties"])[:4] == ["input", "run_name", "teacher", "budget"]


def test_quick_fields_show_the_config_defaults_and_replace_only_when_changed() -> None:
    import inspect

    from distiller.config import DistillConfig
    from flows.distill import QUICK_FIELDS, _setting, distill, with_quick_fields

    defaults = DistillConfig()
    params = inspect.signature(distill.fn).parameters
    for name, dotted in QUICK_FIELDS.items():
        shown = params[name].default
        assert shown in ("", []) or shown == _setting(defaults, dotted), name

    base = DistillConfig(mining={"iterations": 3}, teacher={"provider": "openai"})
    # left at their defaults, the quick fields keep what the config says
    same = with_quick_fields(base, {d: params[n].default for n, d in QUICK_FIELDS.items()})
    assert same is base
    cfg = with_quick_fields(
        base, {"mining.iterations": 2, "export.formats": ["ntuple"], "run_name": "", "input.paths": ["docs"]}
    )
    assert (cfg.mining.iterations, cfg.export.formats, cfg.input.paths) == (2, ["ntuple"], ["docs"])
    assert cfg.run_name is None and cfg.teacher.provider == "openai"
    with pytest.raises(ValueError):
        with_quick_fields(DistillConfig(), {"mining.iterations": 0})


def test_export_format_choices_are_the_exporters() -> None:
    assert set(get_args(ExportFormat)) == set(FORMATS)


def test_readme_configuration_section_matches_the_model() -> None:
    assert update_readme(ROOT / "README.md", check=True), "run: python scripts/config_docs.py"
    text = render_configuration()
    from distiller.config import DistillConfig

    for section, field in DistillConfig.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        for name in sub or [section]:
            key = f"`{section}.{name}`" if sub else f"`{section}`"
            assert key in text, key
