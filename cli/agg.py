"""matplotlib for the commands' figures: the Agg backend (files only, no display), whatever
the environment asks for."""

from __future__ import annotations

import os
from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend.

    ``MPLBACKEND`` is set aside while matplotlib imports: a value it does not know made the
    import itself raise ("Key backend: 'nonsense' is not a valid value"), a traceback from
    ``fit --plot`` and a failed file for every ``grad`` figure, where no display is needed.

    Example:
        >>> pyplot().get_backend().lower()
        'agg'
    """
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # never a window from a batch job
        import matplotlib.pyplot as plt
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    return plt
