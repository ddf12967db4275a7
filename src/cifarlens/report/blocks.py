"""The report's building blocks: paragraphs, notes, lists and tables as plain data."""

from __future__ import annotations

import re
from typing import Any

from cifarlens.report.formats import (
    _s,
)

# --------------------------------------------------------------------------- context


def table_block(headers: list[str], rows: list[list[Any]], *, align: str | None = None,
           highlight: set[int] | None = None, caption: str = "") -> dict[str, Any]:
    """A table block; align is one char per column ('l', 'r', or 'n': left and never wrapped,
    for short labels), default: first l, rest r."""
    ncol = len(headers)
    align = align or ("l" + "r" * (ncol - 1))
    return {"type": "table", "headers": headers,
            "rows": [[_s(c) for c in r] for r in rows], "align": list(align),
            "highlight": sorted(highlight or ()), "caption": caption}


def paragraph(text: str, lead: str = "") -> dict[str, Any]:
    return {"type": "p", "text": text, "lead": lead}


def note_block(text: str) -> dict[str, Any]:
    return {"type": "note", "text": text}


def heading(text: str) -> dict[str, Any]:
    return {"type": "h3", "text": text}


def bullet_list(items: list[str]) -> dict[str, Any]:
    return {"type": "list", "items": items}


def gh_slug(text: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces -> -."""
    s = re.sub(r"[^\w\- ]", "", text.lower())
    return s.replace(" ", "-")


Block = dict[str, Any]
