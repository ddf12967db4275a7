"""Logs and progress bars: both on stderr, so a command's stdout holds only its result lines."""

from __future__ import annotations

import sys
from typing import Any

# A bar appears only for work that lasts longer than this (seconds), as the CLI promises.
PROGRESS_DELAY_S = 2.0


def log(msg: str) -> None:
    """One log line on stderr, printed above any live progress bar."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def progress(total: int, desc: str, enabled: bool, unit: str = "step",
             delay: float = PROGRESS_DELAY_S, **kwargs: Any) -> Any:
    """A tqdm bar with an ETA on stderr, shown once the work has lasted `delay` seconds (quick
    work stays silent) and cleared at the end, so logs keep only the result lines."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, delay=delay,
                leave=False, dynamic_ncols=True, file=sys.stderr, **kwargs)


def fmt_duration(s: float) -> str:
    """A duration as people say it: '48 s', '12 min', '3.1 h' (plans, ETAs, measured times)."""
    if s < 90:
        return f"{max(s, 1):.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
