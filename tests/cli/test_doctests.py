"""The examples in the command layer's docstrings run (pytest collects doctests only from
diffconv_core, so the cli modules are checked here)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.cli.conftest import REPO

MODULES = [
    "cli.errors",
    "cli.interrupts",
    "cli.report",
    "cli.audio_io",
    "cli.writing",
    "cli.pipes",
    "cli.jobs",
    "cli.devices",
    "cli.distributed",
    "cli.runner",
    "cli.options",
    "cli.raw",
    "cli.batch",
    "cli.kernels",
    "cli.fit_data",
    "cli.commands.info",
    "cli.commands.windows",
    "cli.commands.convolve",
    "cli.commands.filter",
    "cli.commands.smooth",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples name files under sample_data/
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"
    # Every module but info (a click command, shown by its --help) carries examples.
    assert result.attempted > 0 or name == "cli.commands.info"
