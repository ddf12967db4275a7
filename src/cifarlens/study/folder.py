"""The study folder's layout: every name in it spelled once, for the study that writes it, the
report that reads it and the CLI (the runs inside have their own owner, runs.Run).

STUDY/
  study.json            the plan: baseline config, seeds, changes (written first; a rerun resumes)
  runs/<arm>-s<seed>/   one run folder per arm and seed (runs.Run)
  figures/              the study's figures, and frozen copies of the run figures it embeds
  browse/               errors.json, errors.csv, atlas.jpg: the failure browser (study/browse.py)
  label_issues.csv      training-set label issues from the seeds' val splits (study/data_side.py)
  summary.json          every number the report states (study/schema.py), written last
  report.html, report.md, tables/*.csv    the report (report/), rebuilt by `cifarlens report`
  notes.md              optional: your own notes, shown in the report
"""

from __future__ import annotations

import os
from pathlib import Path

from cifarlens.runs import Run


class StudyFolder:
    PLAN = "study.json"
    SUMMARY = "summary.json"
    RUNS = "runs"
    FIGURES = "figures"
    BROWSE = "browse"
    TABLES = "tables"
    LABEL_ISSUES = "label_issues.csv"
    NOTES = "notes.md"
    REPORT_HTML = "report.html"
    REPORT_MD = "report.md"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def run(self, arm: str, seed: int) -> Run:
        return Run(self.path / self.RUNS / f"{arm}-s{seed}")

    def run_by_name(self, name: str) -> Path:
        """A run folder named in a summary (only its last part counts: a moved study)."""
        return self.path / self.RUNS / Path(name).name
