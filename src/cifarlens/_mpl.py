"""Import matplotlib whatever MPLBACKEND says.

cifarlens draws on `matplotlib.figure.Figure` with the Agg canvas directly and never uses a
backend, yet matplotlib validates MPLBACKEND when it is imported: `MPLBACKEND=nonsense` made
every figure a traceback. An invalid value is hidden for the import only and put back at once,
so the user's environment (and what pyplot would do with it) is left as it was.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def import_matplotlib() -> Any:
    """The matplotlib module (imported here first: figures/style.py takes it from this module)."""
    try:
        import matplotlib.figure  # noqa: F401
    except ValueError:
        backend = os.environ.pop("MPLBACKEND", None)
        if backend is None:
            raise
        # the failed import left its submodules behind, bound to a half-made package
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]
        try:
            import matplotlib.figure  # noqa: F401, F811
        finally:
            os.environ["MPLBACKEND"] = backend
    return sys.modules["matplotlib"]


matplotlib = import_matplotlib()
