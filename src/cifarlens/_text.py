"""The one sanitizer for text that comes from data (class names, user labels, paths, commands)
before it is drawn in a figure or written into a report. Escaping for a medium (Markdown,
matplotlib's `$`, HTML through jinja2's autoescape) is a thin layer on top of it."""

from __future__ import annotations

import re
import unicodedata

# Whole terminal escape sequences (CSI, OSC, two-byte), not just their ESC byte.
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
# Control, format (every bidi mark and override, zero-width characters: text that displays
# differently from what it is), surrogate, private-use and unassigned code points.
_DROP = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))
_SPACES = frozenset(("Zs", "Zl", "Zp"))


def _is_space(ch: str) -> bool:
    # not str.isspace: it also counts the ASCII separators \x1c-\x1f, which are controls
    return ch in "\t\n\v\f\r" or unicodedata.category(ch) in _SPACES


def plain_text(value: object, max_len: int | None = None, *, collapse: bool = False) -> str:
    """`value` as plain text: ANSI escape sequences and control/format/unassigned characters
    removed, every whitespace character (tabs, newlines, no-break spaces) a plain space; with
    `collapse`, runs of spaces become one and the ends are trimmed; longer than `max_len`,
    cut with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and text.isprintable()):  # else nothing to do (most of ~14,000/report)
        text = _ANSI.sub("", text)
        text = "".join(" " if _is_space(ch) else ch for ch in text
                       if _is_space(ch) or unicodedata.category(ch) not in _DROP)
    if collapse:
        text = " ".join(text.split())
    if max_len is not None and len(text) > max_len:
        text = text[:max_len - 1] + "\u2026"
    return text
