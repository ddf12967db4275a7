"""The one sanitizer for data text (`_text.plain_text`) and its thin per-medium layers."""

from __future__ import annotations

import pytest

from cifarlens._text import plain_text
from cifarlens.figures.style import safe_text
from cifarlens.report.formats import clean_text, md_escape


@pytest.mark.parametrize("raw, want", [
    ("apple", "apple"),
    ("\x1b[31mred\x1b[0m", "red"),                      # a whole CSI sequence, not just ESC
    ("\x1b]8;;http://x\x07link\x1b]8;;\x07", "link"),   # OSC hyperlink
    ("abc\u202eevil\u202c", "abcevil"),                 # bidi override ("Trojan source")
    ("zero\u200bwidth\ufeff", "zerowidth"),             # zero-width characters
    ("a\tb\nc\r\nd", "a b c  d"),                       # whitespace kept as spaces
    ("no\u00a0break", "no break"),                      # a no-break space is a space
    ("bell\x07null\x00", "bellnull"),
    ("private\ue000use", "privateuse"),
    ("caf\u00e9 \u732b", "caf\u00e9 \u732b"),           # letters of any script stay
])
def test_plain_text_keeps_what_displays_and_drops_what_hides(raw, want):
    assert plain_text(raw) == want


def test_collapse_and_length():
    assert plain_text("  a \t\n b  ", collapse=True) == "a b"
    assert plain_text("x" * 50, 10) == "x" * 9 + "\u2026"
    assert len(plain_text("\x1b[1m" + "y" * 45, 40)) == 40  # measured after the escape is gone
    assert plain_text(12.5) == "12.5"


def test_each_medium_adds_only_its_escaping():
    name = "\x1b[31m$x$\u202e  cat"
    assert safe_text(name) == r"\$x\$ cat"      # matplotlib: never mathtext
    assert clean_text(name) == "$x$  cat"       # the report: plain (jinja2 escapes HTML)
    assert md_escape("a_b*\u202e") == r"a\_b\*"  # Markdown specials
