"""The one CSV writer: every CSV the tool writes (metrics.csv, predictions_<split>.csv,
browse/errors.csv, the report's tables/*.csv) goes through `csv_text`, so no cell from data
(a class name, a label) can be read by a spreadsheet as a formula or display as other text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

from cifarlens._text import plain_text

# A cell starting with one of these is a formula in Excel, LibreOffice and Google Sheets (tab
# and CR too, in some; plain_text makes those spaces, so the check skips leading spaces).
FORMULA_START = ("=", "+", "-", "@")


def csv_cell(x: Any) -> str:
    """A CSV cell: numbers in full precision (repr), missing (None, NaN, inf) as empty, bools as
    0/1, text with control, format (bidi) and escape characters removed and kept from being
    read as a formula (a leading = + - @ gets a quote)."""
    if x is None or isinstance(x, bool):
        return "" if x is None else str(int(x))
    if isinstance(x, int):
        return repr(x)
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else ""
    if hasattr(x, "item") and callable(x.item):  # a numpy scalar
        return csv_cell(x.item())
    t = plain_text(x)
    return "'" + t if t.lstrip(" ")[:1] in FORMULA_START else t


def csv_text(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """Header and rows as CSV text (quoted by the csv module where a cell holds a comma or a
    quote), every cell through `csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(c) for c in header])
    w.writerows([[csv_cell(c) for c in r] for r in rows])
    return buf.getvalue()
