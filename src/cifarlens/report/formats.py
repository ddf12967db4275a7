"""Text hygiene and number formats: every string and number the report prints goes through here."""


from __future__ import annotations

import json
import math
import re
from typing import Any

from cifarlens._text import plain_text
from cifarlens._units import fmt_flops as flops_text
from cifarlens.report.constants import DATASET_NAMES, NA, UNSET
from cifarlens.study.schema import StudySummary

# --------------------------------------------------------------------------- text hygiene

def clean_text(value: Any) -> str:
    """A string with escape sequences, control and format characters removed and whitespace
    made plain spaces (`_text.plain_text`). Format characters (Unicode category Cf) include every
    bidirectional mark and override (U+200E, U+200F, U+061C, U+202A-U+202E, U+2066-U+2069),
    which can make text display differently from what it is ("Trojan source"), and invisible
    zero-width characters."""
    return plain_text(value)


_MD_SPECIAL = re.compile(r"([\\`*_<>|\[\]#~])")


def md_escape(value: Any) -> str:
    """Plain text safe inside Markdown prose and table cells (backslash-escapes specials)."""
    return _MD_SPECIAL.sub(r"\\\1", clean_text(value))


class MdRaw(str):
    """Markdown we built ourselves (percent-encoded figure paths); the MD finalizer skips it."""


# --------------------------------------------------------------------------- number formats


def num(x: Any) -> float | None:
    """x as a finite float, or None (bools, strings, NaN and missing values are not numbers)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def fmt_pct(x: Any, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage: 0.6291 -> '62.91%'. A value short of 1 (or above
    0) never reads as 100% (0%): a temperature-scaled confidence of 0.99996 is '>99.99%'."""
    f = num(x)
    if f is None:
        return NA
    text = f"{f * 100:.{digits}f}%"
    top, least = f"{100:.{digits}f}%", f"{0:.{digits}f}%"
    step = f"{10 ** -digits:.{digits}f}" if digits else "1"
    if text == top and f < 1:
        return f">{100 - float(step):.{digits}f}%"
    if text == least and f > 0:
        return f"<{step}%"
    return text


def fmt_points(x: Any, signed: bool = False) -> str:
    """A difference of fractions in percentage points: 0.0663 -> '6.63' ('+6.63' if signed)."""
    f = num(x)
    if f is None:
        return NA
    s = f"{f * 100:+.2f}" if signed else f"{f * 100:.2f}"
    return "0.00" if s in ("+0.00", "-0.00") else s  # no signed zero


def fmt_p(p: Any) -> str:
    """A p-value with 2 significant digits; scientific below 1e-3; '< 1e-300' for 0."""
    f = num(p)
    if f is None or f < 0 or f > 1:
        return NA
    if f == 0:
        return "< 1e-300"
    r = float(f"{f:.2g}")  # round first, so 0.0996 becomes 0.10, not 0.100
    if r < 1e-3:
        return f"{f:.1e}"
    decimals = max(1 - math.floor(math.log10(r)), 0)
    return f"{r:.{decimals}f}"


def p_clause(p: Any) -> str:
    """'p = 0.41', 'p = 3.0e-12' or 'p < 1e-300'."""
    s = fmt_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


def fmt_int(x: Any) -> str:
    f = num(x)
    return NA if f is None else f"{round(f):,}"


def fmt_float(x: Any, digits: int = 3) -> str:
    f = num(x)
    return NA if f is None else f"{f:.{digits}f}"


def fmt_auc(x: Any) -> str:
    return fmt_float(x, 3)


def fmt_params_m(x: Any) -> str:
    f = num(x)
    return NA if f is None else f"{f / 1e6:.2f} M"


def fmt_flops(x: Any) -> str:
    """FLOPs by the one rule `cifarlens complexity` prints them with (complexity.fmt_flops):
    GFLOPs from 0.1 G (the seed's '0.65 GFLOPs'), else MFLOPs, so a tiny model is not '0.00'."""
    f = num(x)
    return NA if f is None else flops_text(f)


def _alpha_text(alpha: float) -> str:
    return f"{alpha * 100:g}%"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _s(x: Any, default: str = NA) -> str:
    """A summary value as display text (None -> 'n/a'; lists/dicts as compact JSON)."""
    if x is None:
        return default
    if isinstance(x, (list, dict)):
        return json.dumps(x, separators=(", ", ": "), default=str)
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def dataset_title(s: StudySummary) -> str:
    """How the report names the study's data: the official name, or for the user's own data
    (data_source "user") "your data: NAME", never CIFAR-100 or generated data."""
    if s.data_source == "user":
        return f"your data: {_s(s.data_name, 'unnamed')}"
    return DATASET_NAMES.get(s.dataset, _s(s.dataset))


def _diff(a: Any, b: Any) -> float | None:
    fa, fb = num(a), num(b)
    return None if fa is None or fb is None else fb - fa


def first_set(d: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` whose value is not None."""
    return next((d[k] for k in keys if d.get(k) is not None), None)


def fmt_dur(x: Any) -> str:
    f = num(x)
    if f is None:
        return NA
    if f < 60:
        return f"{f:.1f} s"
    if f < 3600:
        return f"{f / 60:.1f} min"
    return f"{f / 3600:.2f} h"


def change_text(key: Any, baseline: Any, variant: Any) -> str:
    """A change as the report names it: `key: baseline → variant`."""
    return f"{_s(key)}: {_s(baseline, UNSET)} → {_s(variant, UNSET)}"
