"""The option table: every flag of a config-loading command names a real config setting, once."""

from __future__ import annotations

import inspect

import pytest

from distiller.cli import commands, fuse
from distiller.cli.options import FLAGS, NOT_SETTINGS, checked_table, config_overrides, setting_type
from distiller.config import DistillConfig, load_config


@pytest.mark.parametrize("command", [commands.run, commands.ingest, commands.estimate, commands.bootstrap])
def test_every_parameter_of_a_config_command_is_in_the_table(command: object) -> None:
    params = set(inspect.signature(command).parameters)  # type: ignore[arg-type]
    assert params - NOT_SETTINGS <= set(FLAGS), params - NOT_SETTINGS - set(FLAGS)


def test_fuse_parameters_are_in_its_table() -> None:
    params = set(inspect.signature(fuse.fuse).parameters)
    assert params - {"config", "no_prefect"} == set(fuse.FUSE_FLAGS)


def test_a_wrong_setting_fails_when_the_table_is_built() -> None:
    with pytest.raises(KeyError, match="chunk_sise"):
        checked_table(DistillConfig, {"chunk_size": "chunking.chunk_sise"})
    with pytest.raises(KeyError):
        setting_type(DistillConfig, "chunking.chunk_size.more")
    assert setting_type(DistillConfig, "chunking.chunk_size") is int


def test_overrides_from_flags() -> None:
    got = config_overrides({"chunk_size": 64, "input": ("a", "b"), "model": None, "export_format": []})
    assert got == {"chunking": {"chunk_size": 64}, "input": {"paths": ["a", "b"]}}
    cfg = load_config(None, got)
    assert cfg.chunking.chunk_size == 64 and cfg.input.paths == ["a", "b"]
