"""Rendering: jinja2 templates for HTML and Markdown, and writing the report files."""


from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from cifarlens._io import locked, write_text
from cifarlens.errors import CifarlensError
from cifarlens.report.constants import _TEMPLATES, NA
from cifarlens.report.formats import MdRaw, clean_text, md_escape
from cifarlens.report.sections import build_context
from cifarlens.report.tables import TABLES_DIR, comparison_tables
from cifarlens.study.folder import StudyFolder
from cifarlens.study.schema import StudySummary, read_summary

# --------------------------------------------------------------------------- rendering

def _html_finalize(value: Any) -> Any:
    if value is None:
        return NA
    if isinstance(value, jinja2.runtime.Undefined):
        return ""
    # Markup can only come from the template itself (macros); summary strings are plain str.
    return value if hasattr(value, "__html__") else clean_text(value)


def _md_finalize(value: Any) -> Any:
    if value is None:
        return NA
    if isinstance(value, (MdRaw, jinja2.runtime.Undefined)):
        return value
    return md_escape(value)


@lru_cache(maxsize=1)
def _envs() -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(_TEMPLATES))
    # default=True: a template with an unexpected extension is escaped too, never raw.
    html = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html"],
                              default=True), finalize=_html_finalize,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)
    md = jinja2.Environment(loader=loader, autoescape=False, finalize=_md_finalize,
                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True, keep_trailing_newline=True)
    # Indented code is literal in Markdown: clean it but do not backslash-escape it. With
    # newlines already stripped it cannot leave the code line.
    md.filters["code"] = lambda x: MdRaw(clean_text(x))
    return html, md


def render_html(ctx: dict[str, Any]) -> str:
    return _envs()[0].get_template("report.html").render(**ctx)


def render_markdown(ctx: dict[str, Any]) -> str:
    text = _envs()[1].get_template("report.md").render(**ctx)
    text = re.sub(r"[ \t]+\n", "\n", text)  # table rows end in "| "; we never use hard breaks
    return re.sub(r"\n{3,}", "\n\n", text)  # blocks leave blank-line runs; one is enough


@locked
def render_report(study_dir: Path, summary: StudySummary | None = None) -> tuple[Path, Path]:
    """Write study_dir/report.html, study_dir/report.md and the comparison tables as
    study_dir/tables/{replication,comparison,per_class,per_seed}.csv, each atomically; return
    the two reports' paths.

    ``summary`` defaults to study_dir/summary.json (read and checked key by key: a damaged
    summary is one line naming the key). Re-running only re-renders: nothing is retrained, so
    ``cifarlens report STUDY`` is cheap.
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise CifarlensError(f"study folder not found: {study_dir}")
    if summary is None:
        summary = read_summary(study_dir / StudyFolder.SUMMARY)
    ctx = build_context(summary, study_dir)
    try:
        html, md = render_html(ctx), render_markdown(ctx)
    except jinja2.TemplateError as e:  # a broken installed template, not a user error
        raise RuntimeError(f"report template error: {e}") from e
    tables = comparison_tables(summary, study_dir)
    html_path, md_path = study_dir / StudyFolder.REPORT_HTML, study_dir / StudyFolder.REPORT_MD
    write_text(html_path, html)
    write_text(md_path, md)
    for name, text in tables.items():
        write_text(study_dir / TABLES_DIR / name, text)
    return html_path, md_path
