"""STUDY/notes.md: the user's notes rendered next to each tracked failure, escaped."""

from __future__ import annotations

import re

import pytest
import test_report
from test_report import make_study

from cifarlens.errors import CifarlensError
from cifarlens.report.notes import read_notes
from cifarlens.report.render import render_report

pngs = test_report.pngs  # the figure fixture, shared

NOTES = """# My notes (ignored: before the first ## heading)

## study
Hypothesis: crop-flip helps on objects off-centre.
Second line of the same paragraph.

A second paragraph with <b>bold</b> & *stars*.

## test 77
Probably a label error: the <script>alert(1)</script> cup looks like a bottle.

## Test 4321
Maple vs oak: [link](javascript:alert(2)) leaves ![x](http://evil/x.png)

## test 999
An image nobody tracked.
"""


def test_notes_render_next_to_their_failure_escaped(tmp_path, pngs):
    study, _ = make_study(tmp_path, pngs)
    (study / "notes.md").write_text(NOTES, encoding="utf-8")
    h, m = (p.read_text(encoding="utf-8") for p in render_report(study))
    # nothing of the user's text is markup
    assert "<script>alert(1)" not in h and "&lt;script&gt;alert(1)&lt;/script&gt;" in h
    assert "<b>bold</b>" not in h and "&lt;b&gt;bold&lt;/b&gt; &amp; *stars*" in h
    assert 'href="javascript' not in h and "http://evil" not in re.sub(
        r"<p>[^<]*</p>", "", h)  # only inside escaped paragraph text
    # Markdown: the brackets are escaped, so neither a link nor an image is formed
    assert "\\<script\\>" in m and "\\[link\\](javascript" in m and "[link](" not in m
    assert "!\\[x\\](http://evil" in m and "![x](" not in m
    # paragraphs: lines joined, blank lines split
    assert ("<p>Hypothesis: crop-flip helps on objects off-centre. Second line of the same "
            "paragraph.</p>") in h
    # each note sits under its failure, in the constrained-improvement section, in rank order
    sec = h[h.index('<section id="constrained-improvement">'):]
    sec = sec[:sec.index("</section>")]
    i77, i4321, i999 = (sec.index(f'id="note-test-{i}"') for i in (77, 4321, 999))
    assert i77 < i4321 < i999
    assert "#2, test image 77: true cup, baseline said bottle; variant: still wrong" in sec
    assert "Test image 999 (not among the tracked failures)" in sec
    # the study note goes with the summary
    summ = h[h.index('<section id="summary">'):]
    assert summ.index('id="note-study"') < summ.index("</section>")
    assert "# My notes" not in h
    assert ("**\\#2, test image 77: true cup, baseline said bottle; variant: still wrong (same "
            "class)**") in m


def test_no_notes_file_is_fine_and_malformed_headings_say_where(tmp_path, pngs):
    study, _ = make_study(tmp_path, pngs)
    assert read_notes(study) == {}
    h = render_report(study)[0].read_text(encoding="utf-8")
    assert "user-note" not in h.split("</style>")[1]
    for bad, where in (("## study\nok\n## failure 12\nx\n", "line 3"),
                       ("## test twelve\n", "line 1"),
                       ("## test 5\na\n\n## test 5\nb\n", "line 4")):
        (study / "notes.md").write_text(bad, encoding="utf-8")
        with pytest.raises(CifarlensError) as e:
            render_report(study)
        msg = str(e.value)
        assert "\n" not in msg and where in msg and "notes.md" in msg
    (study / "notes.md").write_bytes(b"## study\n\xff\xfe\n")
    with pytest.raises(CifarlensError, match="not UTF-8"):
        read_notes(study)
    # a ### sub-heading is the user's text, not a new note
    (study / "notes.md").write_text("## test 77\n### why\nbecause\n", encoding="utf-8")
    assert read_notes(study) == {"test 77": ["### why because"]}
