"""Turn a study's summary.json (plus its figures) into report.html and report.md.

Every sentence that states a result is generated from the numbers by small pure helpers
(``describe_*`` in sentences.py), so the prose can never drift from the tables. Both outputs are
rendered from one context of already-formatted strings, so they show identical numbers.

Safety: every string taken from the summary is escaped at output time (jinja2 autoescape for
HTML, a Markdown finalizer for MD) and stripped of control characters; nothing from the summary
is ever marked safe. Figures are embedded only when they are PNG files inside the study folder.

One layer per module, each importing only the ones above it:
    constants.py     thresholds, the section and figure tables, fixed wording, the browser script
    formats.py       text hygiene (via _text.plain_text) and number formats
    sentences.py     every generated sentence (describe_*, verdicts, replication)
    blocks.py        paragraphs, notes, lists and tables as plain data
    embed.py         figures embedded as data URIs (inside the study only, compacted once)
    view.py          the summary read once, with the paths and runs it names
    convergence.py   whether the runs had stopped improving
    notes.py         the user's notes placed under the sections they name
    first_screen.py  the verdict, the seed report side by side, the ablation
    sections.py      every numbered section (SECTION_BUILDERS) and build_context
    tables.py        the comparison tables as CSV
    export.py        the study's figures redrawn as SVG/PDF
    render.py        jinja2 rendering and writing report.html / report.md (render_report)
"""

from cifarlens.report.export import export_figures
from cifarlens.report.first_screen import ablation_lines, headline
from cifarlens.report.render import render_report

__all__ = ["ablation_lines", "export_figures", "headline", "render_report"]
