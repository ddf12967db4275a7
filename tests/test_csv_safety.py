"""Every CSV the tool writes goes through the one writer (csvfile.py): no cell from data can be
read as a spreadsheet formula or hide bidi/control characters (issue 20)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from cifarlens.csvfile import csv_cell, csv_text
from cifarlens.runs import Run
from cifarlens.stages.evaluate import predictions_csv
from cifarlens.study import browse

EVIL = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
        "\t=1+1", "\r=1+1", "  =1", "ab\u202ecd\u2066", "x\x1b[31my\x00"]


def _cells(text: str) -> list[str]:
    return [c for row in csv.reader(io.StringIO(text)) for c in row]


def _safe(cell: str) -> bool:
    return (cell.lstrip(" ")[:1] not in ("=", "+", "-", "@")
            and not any(ch in cell for ch in "\t\r\x1b\x00\u202e\u2066"))


@pytest.mark.parametrize("name", EVIL)
def test_cell_is_never_a_formula_nor_hides_text(name):
    assert _safe(csv_cell(name))


def test_numbers_stay_numbers():
    assert [csv_cell(x) for x in (-0.5, 3, np.int64(-2), np.float32(0.25), None, float("nan"),
                                  True)] == ["-0.5", "3", "-2", "0.25", "", "", "1"]


def test_predictions_csv_neutralises_class_names():
    names = EVIL[:2]
    p = {"indices": np.array([0, 1]), "labels": np.array([0, 1]), "pred": np.array([1, 0]),
         "confidence": np.array([0.5, 0.25], dtype=np.float32)}
    cells = _cells(predictions_csv(p, names))
    assert all(_safe(c) for c in cells)
    assert "'=HYPERLINK(\"http://x\",\"y\")" in cells


def test_browse_errors_csv_neutralises_class_names():
    rows = [{"index": 3, "true": 0, "pred_a": 1, "conf_a": 0.9, "tconf_a": 0.8, "pred_b": 2,
             "conf_b": 0.7, "tconf_b": 0.6, "outcome": "both_wrong", "label_suspect": False}]
    cells = _cells(browse._csv(rows, EVIL[:3]))
    assert all(_safe(c) for c in cells)
    assert "'+cmd|' /C calc'!A0" in cells


def test_metrics_csv_goes_through_the_writer(tmp_path):
    run = Run(tmp_path)
    run.write_history([{"epoch": 1, "loss": -0.5, "note": "=1+1\u202e"}])
    cells = _cells((tmp_path / Run.HISTORY_CSV).read_text())
    assert cells == ["epoch", "loss", "note", "1", "-0.5", "'=1+1"]


def test_csv_text_header_and_rows():
    assert csv_text(["a", "=b"], [[1, "@x"]]) == "a,'=b\n1,'@x\n"
