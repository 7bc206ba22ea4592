"""`serve` flags: each number flag reads the RUNWIRE_* variable its help names, and
without any variable the parsed settings are the Settings defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path

import pytest

from runwire.config import Settings, add_serve_arguments, settings_from_args

_VARIABLE_AND_DEFAULT = re.compile(r"\(RUNWIRE_([A-Z_]+); default %\(default\)s\)$")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser


@pytest.fixture(autouse=True)
def _no_runwire_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RUNWIRE_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def test_config_flags_default_to_the_settings_defaults() -> None:
    parsed = settings_from_args(_parser().parse_args([]))
    assert dataclasses.replace(parsed, server_id="x") == Settings(server_id="x")


def test_config_flags_read_the_variable_their_help_names(monkeypatch: pytest.MonkeyPatch) -> None:
    named = [
        (action, m[1])
        for action in _parser()._actions
        if action.help and (m := _VARIABLE_AND_DEFAULT.search(action.help))
    ]
    assert len(named) >= 25
    for action, variable in named:
        assert variable == action.option_strings[0].removeprefix("--").replace("-", "_").upper()
        monkeypatch.setenv(f"RUNWIRE_{variable}", "7")
        kind = action.type if callable(action.type) else str
        assert getattr(_parser().parse_args([]), action.dest) == kind("7"), variable
        if kind not in (str, Path):  # a number: an empty variable keeps the default
            monkeypatch.setenv(f"RUNWIRE_{variable}", "")
            assert getattr(_parser().parse_args([]), action.dest) == action.default, variable
        monkeypatch.delenv(f"RUNWIRE_{variable}")
