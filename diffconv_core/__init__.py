"""diffconv_core: differentiable 1-D convolution in PyTorch.

Pure tensor math: no files, no click, no soundfile. Functions first; the Modules in
:mod:`diffconv_core.nn` are thin wrappers around them.

Submodules (imported on first use): ``windows``, ``filters``, ``smooth``, ``nn``,
``gradients``, ``streaming``, ``padding``, ``methods``, ``tuning``, ``fitting``,
``memory``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "windows",
    "filters",
    "smooth",
    "nn",
    "gradients",
    "streaming",
    "padding",
    "methods",
    "tuning",
    "fitting",
    "memory",
}

# Each public function and the module that defines it.
_CORE_FUNCTIONS = {
    "convolve": "convolution",
    "correlate": "convolution",
    "choose_method": "methods",
    "set_compile_mode": "_compile",
}

__all__ = sorted(_CORE_FUNCTIONS.keys() | _SUBMODULES)


def __getattr__(name: str) -> Any:
    # Lazy, so that `import diffconv_core` stays cheap and submodules stay independent.
    if name in _CORE_FUNCTIONS:
        module = importlib.import_module(f"diffconv_core.{_CORE_FUNCTIONS[name]}")
        # Kept as an attribute, so that later lookups skip this hook (~3 us a call for
        # `diffconv_core.convolve(...)` in a loop). Submodules are set by the import itself.
        globals()[name] = function = getattr(module, name)
        return function
    if name in _SUBMODULES:
        return importlib.import_module(f"diffconv_core.{name}")
    raise AttributeError(f"module 'diffconv_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too (tab completion, help()), without the helpers imported above.
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
