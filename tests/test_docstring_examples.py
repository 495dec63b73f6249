"""The public modules' docstring examples run pasted into a fresh interpreter.

pytest's --doctest-modules runs each example with its module's globals, so an example that
uses ``torch`` or the documented function without importing it passes there but fails with
NameError for a user who copies it. Here each docstring runs with empty globals instead.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

# The modules whose examples are self-contained (each starts with its own imports).
SELF_CONTAINED = [
    "diffconv_core",
    "diffconv_core.convolution",
    "diffconv_core.filters",
    "diffconv_core.fitting",
    "diffconv_core.gradients",
    "diffconv_core.memory",
    "diffconv_core.methods",
    "diffconv_core.nn",
    "diffconv_core.padding",
    "diffconv_core.smooth",
    "diffconv_core.streaming",
    "diffconv_core.tuning",
    "diffconv_core.windows",
]


def _is_public(test_name: str) -> bool:
    # "diffconv_core.windows.get_window" or "...Class.method": only public names, and the
    # module docstring itself (its name is the module's).
    return not any(part.startswith("_") for part in test_name.split("."))


@pytest.mark.parametrize("module_name", SELF_CONTAINED)
def test_examples_run_with_empty_globals(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # The finder would fill globs from the module; {} is what a fresh interpreter has.
    tests = [t for t in finder.find(module, globs={}) if _is_public(t.name)]
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS  # as pyproject's doctest options
    failures = []
    for test in tests:
        runner = doctest.DocTestRunner(optionflags=flags)
        output: list[str] = []
        result = runner.run(test, out=output.append, clear_globs=True)
        if result.failed:
            failures.append("".join(output))
    assert not failures, "\n".join(failures)
