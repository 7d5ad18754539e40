"""Domain and language templates: packaged ones load, a user's file is picked up from a folder (config or
environment) and overrides the packaged one, unknown names are errors that list the known ones, and the
CLI lists them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distiller.cli import app
from distiller.config import GenerationConfig
from distiller.errors import ConfigError
from distiller.prompts import context
from distiller.templates import (
    ENV_VAR,
    UnknownTemplateError,
    domain_for,
    language_for,
    list_domains,
    list_languages,
    load_domain,
    load_language,
)

DOMAINS = {"general", "legal", "medical", "technical", "finance"}
LANGUAGES = {"en", "de", "es", "fr"}

MARITIME = """\
description: Shipping, ports and the law of the sea.
persona: a maritime lawyer and former ship's officer
subtopics: [charter parties, collisions, salvage]
query_types: {factual: 2, scenario: 1}
complexity_mix: {simple: 1, complex: 1}
"""


def test_packaged_templates_load_with_normalised_mixes() -> None:
    domains = {d.name: d for d in list_domains()}
    assert set(domains) >= DOMAINS
    for d in domains.values():
        for mix in (d.complexity_mix, d.length_mix, d.query_types):
            assert sum(mix.values()) == pytest.approx(1.0)
        assert d.subtopics and d.persona and d.description
    languages = {lang.code: lang for lang in list_languages()}
    assert set(languages) >= LANGUAGES
    assert languages["de"].native_name == "Deutsch" and "Deutsch" in languages["de"].instruction


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_prompt_renders_in_every_language(code: str) -> None:
    from distiller.prompts import concepts, documents, judge, qa, queries

    values = context("legal", load_domain("legal"), load_language(code))
    values |= {
        "batch_label": "Batch 1.1",
        "focus": "contracts",
        "n": 2,
        "n_known": 0,
        "known": "(none yet)",
        "terms": "a; b",
        "material": "Concept: lease",
        "slots": "1. complexity: simple; type: factual",
        "source": "doc.md, part 1",
        "passage": '"""text"""',
        "query": "what is a lease",
        "complexity": "simple",
        "query_type": "factual",
        "about": "lease",
        "n_pos": 1,
        "words": "40-80",
        "strategy_lines": documents.strategy_lines(True),
        "negatives_request": documents.negatives_request(["scope_mismatch"], "40-80"),
        "question": "q",
        "answer": "a",
    }
    prompts = [
        concepts.CONCEPTS,
        concepts.RELATIONSHIPS,
        queries.FROM_CONCEPT,
        queries.FROM_CHUNK,
        qa.QA,
        documents.DOCUMENTS,
        documents.NEGATIVES,
        judge.JUDGE_QA,
        judge.JUDGE_QUERY,
    ]
    native = load_language(code).native_name
    for p in prompts:
        system, user = p.render(values)
        assert user and system
        if p.name.startswith("judge"):
            assert load_language(code).name in system  # told the material may be in that language
        else:
            assert native in system  # every generation prompt says which language to write in


def test_unknown_template_and_language_list_the_known_ones() -> None:
    with pytest.raises(UnknownTemplateError) as e:
        load_domain("astrology")
    assert "'astrology'" in str(e.value) and all(d in str(e.value) for d in DOMAINS)
    with pytest.raises(UnknownTemplateError) as e:
        language_for(GenerationConfig(language="xx"))
    assert "known: de, en, es, fr" in str(e.value)
    with pytest.raises(UnknownTemplateError):
        domain_for(GenerationConfig(domain="legal", template="nope"))


def test_domain_template_choice_and_config_overrides() -> None:
    assert domain_for(GenerationConfig(domain="legal")).name == "legal"  # the domain's own
    assert domain_for(GenerationConfig(domain="maritime law")).name == "general"  # none of its own
    assert domain_for(GenerationConfig(domain="maritime law", template="legal")).name == "legal"
    tpl = domain_for(GenerationConfig(domain="legal", complexity_mix={"simple": 1, "complex": 3}))
    assert tpl.complexity_mix == {"simple": 0.25, "complex": 0.75}
    with pytest.raises(ConfigError, match="unknown entries"):
        domain_for(GenerationConfig(domain="legal", complexity_mix={"trivial": 1}))


def _user_folder(tmp_path: Path) -> Path:
    root = tmp_path / "my-templates"
    (root / "domains").mkdir(parents=True)
    (root / "languages").mkdir()
    (root / "domains" / "maritime.yaml").write_text(MARITIME, encoding="utf-8")
    (root / "domains" / "legal.yaml").write_text(
        MARITIME.replace("Shipping", "Our own legal template"), encoding="utf-8"
    )
    (root / "languages" / "it.yaml").write_text(
        "name: Italian\nnative_name: Italiano\ninstruction: Write in Italian.\n"
        "native_instruction: Scrivi in italiano.\n",
        encoding="utf-8",
    )
    return root


def test_a_users_folder_adds_and_overrides_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _user_folder(tmp_path)
    by_config = GenerationConfig(domain="maritime", language="it", templates_dir=str(root))
    assert domain_for(by_config).persona.startswith("a maritime lawyer")
    assert domain_for(by_config).query_types == pytest.approx({"factual": 2 / 3, "scenario": 1 / 3})
    assert language_for(by_config).native_name == "Italiano"
    assert load_domain("legal", str(root)).description.startswith("Our own legal")  # shadows the package's
    monkeypatch.setenv(ENV_VAR, str(root))
    assert domain_for(GenerationConfig(domain="maritime")).name == "maritime"
    assert "it" in {lang.code for lang in list_languages()}


def test_a_broken_template_names_its_file(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "domains").mkdir(parents=True)
    (root / "domains" / "bad.yaml").write_text("description: x\npersona: y\nlength_mix: {huge: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*length_mix"):
        load_domain("bad", str(root))
    (root / "domains" / "worse.yaml").write_text("description: [unclosed\n")
    with pytest.raises(ConfigError, match=r"worse\.yaml.*malformed YAML"):
        load_domain("worse", str(root))


def test_cli_lists_templates_and_languages(tmp_path: Path) -> None:
    root = _user_folder(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["templates", "--templates-dir", str(root)])
    assert res.exit_code == 0, res.output
    assert all(d in res.output for d in [*DOMAINS, "maritime"])
    res = runner.invoke(app, ["languages", "--templates-dir", str(root)])
    assert res.exit_code == 0, res.output
    assert all(code in res.output for code in [*LANGUAGES, "it"]) and "Deutsch" in res.output


def test_cli_bootstrap_rejects_an_unknown_language_listing_the_known(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "bootstrap",
            "--domain",
            "legal",
            "--language",
            "xx",
            "--teacher",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2
    assert "unknown language 'xx'" in res.output and "de, en, es, fr" in res.output


def test_cli_bootstrap_needs_an_llm_teacher(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bootstrap", "--domain", "legal", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "needs an LLM teacher" in res.output
