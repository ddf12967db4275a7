"""`cifarlens report --figure-format svg|pdf`: the study's figures redrawn from saved data."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import test_report
from matplotlib.figure import Figure
from test_report import make_study, make_summary

from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.figures.style import figure_formats, save_figure
from cifarlens.report.export import export_figures

pngs = test_report.pngs  # the figure fixture, shared


def _bins() -> dict:
    return {"n_bins": 2, "edges": [0.0, 0.5, 1.0], "count": [4, 6], "confidence": [0.4, 0.8],
            "accuracy": [0.5, 0.67]}


def _study(tmp_path: Path, pngs) -> Path:
    s = make_summary()
    s["dataset"] = "toy"  # 3 classes, no names to look up
    s["models"]["baseline"]["run"] = "/somewhere/else/runs/baseline-s0"  # moved study
    s["models"]["variant"]["run"] = "runs/variant-s0"
    study, _ = make_study(tmp_path, pngs, s)
    for name, cm in (("baseline-s0", [[5, 1, 0], [2, 3, 1], [0, 1, 6]]),
                     ("variant-s0", [[6, 0, 0], [1, 4, 1], [1, 1, 5]])):
        d = study / "runs" / name
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(
            {"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "train_acc": e / 10,
             "val_acc": e / 11}) for e in range(1, 6)))
        (d / "metrics_test.json").write_text(json.dumps(
            {"confusion_matrix": cm, "calibration": _bins(), "ece": 0.05}))
    return study


def test_report_figure_format_svg_and_pdf(tmp_path, pngs, capsys):
    study = _study(tmp_path, pngs)
    before = {p: p.read_bytes() for p in (study / "figures").glob("*.png")}
    assert main(["report", str(study), "--figure-format", "svg"]) == 0
    out = capsys.readouterr()
    keys = ("curves", "confusion", "confusion_difference", "per_class_changes", "reliability")
    for k in keys:
        f = study / "figures" / "svg" / f"{k}.svg"
        assert f"figure: {f}" in out.out
        root = ET.parse(f).getroot()  # well-formed SVG with drawn content
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20
    assert not list((study / "figures" / "svg").glob("*.png"))  # only the format asked for
    assert "gradcam_tracking" in out.err and "not redrawn" in out.err
    # the study's own PNGs are untouched
    assert {p: p.read_bytes() for p in (study / "figures").glob("*.png")} == before
    files, skipped = export_figures(study, "pdf")
    assert sorted(p.name for p in files) == sorted(f"{k}.pdf" for k in keys)
    assert all(p.read_bytes().startswith(b"%PDF") for p in files)
    # same data, same bytes (no timestamps)
    again, _ = export_figures(study, "pdf")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in files]


def test_figure_formats_is_scoped(tmp_path):
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    with figure_formats(("svg", "png")):
        save_figure(fig, tmp_path / "a.png")
    save_figure(fig, tmp_path / "b.png")  # the scope is over: PNG only again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg", "b.png"]
    with pytest.raises(CifarlensError), figure_formats(("jpg",)):
        pass


def test_export_without_runs_is_one_clear_error(tmp_path, pngs):
    study, _ = make_study(tmp_path, pngs)
    assert main(["report", str(study), "--figure-format", "pdf"]) == 1
