"""browse.py and the report's failure browser: every error listed, sorted and filtered by the
page's own script (driven in headless Chromium), maps drawn on demand, everything escaped."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from test_report import CHROMIUM_FLAGS, _chromium, _console, make_summary

from cifarlens.report.constants import BROWSE_JS, BROWSE_JS_SHA256
from cifarlens.report.render import render_report
from cifarlens.runs import Run
from cifarlens.stages.evaluate import predict
from cifarlens.study import browse as B
from cifarlens.study.schema import summary_from_json


def test_outcomes_partition_every_error():
    y = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 9, 9, 9, 4, 5])
    b = np.array([0, 1, 9, 8, 7, 5])
    assert B.outcomes(y, a, b).tolist() == ["", "fixed", "still_wrong", "other_wrong",
                                            "newly_wrong", ""]


def test_prepare_lists_every_error_with_maps_and_csv(run_copy, tmp_path):
    predict(run_copy, ("test",), device="cpu")
    study = tmp_path / "study"
    out = B.prepare(study, run_copy, run_copy)  # the same run twice: every error is still_wrong
    p = Run(run_copy).predictions("test")
    wrong = np.flatnonzero(p["pred"] != p["labels"])
    assert out["rows"] == len(wrong) and out["counts"]["still_wrong"] == len(wrong)
    rec = json.loads((study / "browse" / "errors.json").read_text())
    assert [r["index"] for r in rec["rows"]] == p["indices"][wrong].tolist()
    assert rec["maps"]["shape"] == [len(wrong), 4, 4]
    maps = _unpack(rec["maps"]["a_pred"]).reshape(len(wrong), 4, 4)  # uint8, value x 255
    assert rec["maps"]["a_pred"] == rec["maps"]["b_pred"]  # same model, same scale
    assert (maps == 255).mean() >= 0.005  # scaled by the 99th percentile: the top 1% saturate
    # the packed maps are the Grad-CAM maps to within one step of 1/255
    from cifarlens.study.browse import _maps

    ref, _ = _maps(Run(run_copy), Run(run_copy).data().test_x[p["indices"][wrong]],
                   p["pred"][wrong], p["labels"][wrong])
    assert np.abs(maps / 255 - ref).max() <= 0.5 / 255 + 1e-9
    rows = list(csv.DictReader(io.StringIO((study / "browse" / "errors.csv").read_text())))
    assert len(rows) == len(wrong)
    assert rows[0]["true"] == rec["class_names"][rec["rows"][0]["true"]]
    atlas = (study / "browse" / "atlas.jpg").read_bytes()
    from PIL import Image

    im = Image.open(io.BytesIO(atlas))
    assert im.size == (32 * 32, 32 * -(-len(wrong) // 32))


def _unpack(b64: str) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


def _pack(a: np.ndarray, dtype: str) -> str:
    import base64

    return base64.b64encode(np.asarray(a, dtype=dtype).tobytes()).decode("ascii")


# --- the page ------------------------------------------------------------------------------------


NAMES = ["apple", "maple_tree", "oak_tree", "<b>boy</b>", "man"]
ROWS = [  # k, index, true, pred_a, conf_a, pred_b, conf_b, outcome, label
    (0, 11, 1, 2, 0.91, 1, 0.80, "fixed", False),
    (1, 12, 1, 2, 0.55, 2, 0.97, "still_wrong", False),
    (2, 13, 3, 4, 0.99, 0, 0.60, "other_wrong", True),
    (3, 14, 0, 0, 0.70, 2, 0.40, "newly_wrong", False),
    (4, 15, 2, 1, 0.30, 2, 0.95, "fixed", False),
]


def _study(tmp_path: Path) -> Path:
    study = tmp_path / "study"
    (study / "browse").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(ROWS), 3, 32, 32), dtype=np.uint8)
    (study / "browse" / "atlas.jpg").write_bytes(B._atlas(images))
    rows = [{"k": k, "index": i, "true": t, "pred_a": a, "conf_a": ca, "tconf_a": ca,
             "pred_b": b, "conf_b": cb, "tconf_b": cb, "outcome": o, "label_suspect": lab}
            for k, i, t, a, ca, b, cb, o, lab in ROWS]
    maps = _pack(rng.integers(0, 256, (len(ROWS), 4, 4)), "u1")
    # neighbours (k = 2): row 0 the baseline's, with tiles 0 and 1; row 3 (newly wrong) the
    # variant's; the others none. Labels 3 = "<b>boy</b>": escaped by textContent
    labels = np.full((len(ROWS), 2, 2), 65535)
    labels[0] = [[2, 3], [1, 1]]
    labels[3] = [[2, 2], [0, 4]]
    sims = np.full((len(ROWS), 2, 2), -1.0)
    sims[0], sims[3] = [[0.9, 0.8], [0.5, 0.4]], [[0.7, 0.6], [0.3, -0.2]]
    neighbours = {"k": 2, "layer": "fc", "what": "test", "of": "a--b-",
                  "labels": _pack(labels, "<u2"),
                  "sims": _pack(np.round((sims + 1) * 127.5), "u1"), "tiles": {"0": [1, 0, 2, 2]}}
    (study / "browse" / "errors.json").write_text(json.dumps({
        "n_test": 100, "counts": {}, "class_names": NAMES, "tile": 32, "cols": 32, "rows": rows,
        "maps": {"shape": [len(ROWS), 4, 4], **{k: maps for k in ("a_pred", "a_true", "b_pred",
                                                                  "b_true")}},
        "map_scale": "test", "atlas": "atlas.jpg", "neighbours": neighbours}))
    summary = make_summary()
    summary["browse"] = {"file": "browse/errors.json"}
    summary["figures"] = {}
    (study / "summary.json").write_text(json.dumps(summary))
    render_report(study)
    return study


class _Rows(HTMLParser):
    """Visible rows of #browse-table in DOM order (data-index), and the detail panel state."""

    def __init__(self) -> None:
        super().__init__()
        self.visible: list[int] = []
        self.drawn: str | None = None
        self.neighbours: list[str] | None = None  # figcaptions of #bd-neighbours when shown
        self.thumbs: list[str] = []  # their thumbnails' background positions
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-index" in a and "hidden" not in a:
            self.visible.append(int(a["data-index"]))
        if a.get("id") == "browse-detail" and "hidden" not in a:
            self.drawn = a.get("data-drawn")
        if a.get("id") == "bd-neighbours" and "hidden" not in a:
            self.neighbours = []
        if self.neighbours is not None and tag in ("figcaption", "p"):
            self._in = tag
        if self.neighbours is not None and a.get("class") == "thumb":
            self.thumbs.append(a.get("style", ""))

    def handle_data(self, data):
        if self._in == "figcaption" and self.neighbours is not None:
            self.neighbours.append(data)
        elif self._in == "p" and self.neighbours is not None and not self.neighbours:
            self.neighbours.append(data)  # the lead sentence first

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None


def _view(exe: str, tmp: Path, page: Path, fragment: str) -> _Rows:
    """The page's DOM after its script ran, opened at `fragment` (the view's address)."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          "--virtual-time-budget=3000", page.resolve().as_uri() + fragment],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _console(res.stderr), _console(res.stderr)  # no CSP violation, no JS error
    p = _Rows()
    p.feed(res.stdout)
    return p


def test_browser_sorts_filters_and_draws_in_chromium(tmp_path):
    exe = _chromium()
    study = _study(tmp_path)
    page = study / "report.html"
    doc = page.read_text()
    assert "<b>boy</b>" not in doc and html.escape("<b>boy</b>") in doc
    assert doc.count("data:image/jpeg;base64,") == 1  # the atlas is embedded once
    # default view: every row, most confident baseline prediction first
    assert _view(exe, tmp_path, page, "").visible == [13, 11, 14, 12, 15]
    # ascending by the variant's confidence
    assert _view(exe, tmp_path, page, "#browse?sort=cb").visible == [14, 13, 11, 15, 12]
    # true-class filter (substring, case-insensitive) and outcome groups
    assert _view(exe, tmp_path, page, "#browse?true=MAPLE&sort=index").visible == [11, 12]
    assert _view(exe, tmp_path, page, "#browse?outcome=variant&sort=index").visible == [12, 13,
                                                                                        14]
    assert _view(exe, tmp_path, page, "#browse?outcome=baseline&sort=index").visible == [11, 12,
                                                                                         13, 15]
    assert _view(exe, tmp_path, page, "#browse?pred=oak&sort=index").visible == [11, 12, 14, 15]
    assert _view(exe, tmp_path, page, "#browse?label=yes").visible == [13]
    # min confidence applies to the wrong prediction(s): row 15 is fixed at 0.30
    assert _view(exe, tmp_path, page, "#browse?min=0.9&sort=index").visible == [11, 12, 13]
    # a row opened from the address draws its maps
    shown = _view(exe, tmp_path, page, "#browse?show=2")
    assert shown.drawn == "2" and shown.neighbours is None  # no neighbours for this row
    # and its nearest training images: labels, similarities, thumbnails from the atlas tiles
    nb = _view(exe, tmp_path, page, "#browse?show=0")
    assert nb.neighbours[0].startswith("The 2 training images the baseline represents most")
    assert "not a cause" in nb.neighbours[0]
    assert nb.neighbours[1:] == ["oak_tree 0.90", "<b>boy</b> 0.80", "maple_tree 0.50",
                                 "maple_tree 0.40"]
    assert nb.thumbs == ["background-position: -32px 0px;", "background-position: 0px 0px;",
                         "background-position: -64px 0px;", "background-position: -64px 0px;"]
    nb = _view(exe, tmp_path, page, "#browse?show=3")  # newly wrong: the variant's, no tiles
    assert "the variant represents" in nb.neighbours[0] and not nb.thumbs
    assert nb.neighbours[1:] == ["oak_tree 0.70", "oak_tree 0.60", "apple 0.30", "man -0.20"]
    # keys from the address never reach an object's prototype (it threw in the console before;
    # _view fails on any console error)
    proto = _view(exe, tmp_path, page, "#browse?show=__proto__&sort=__proto__")
    assert proto.drawn is None and len(proto.visible) == 5


def test_report_without_browse_record_has_no_section(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    render_report(study, summary_from_json(make_summary()))
    doc = (study / "report.html").read_text()
    assert 'id="browse"' not in doc


def test_broken_browse_record_is_skipped_not_fatal(tmp_path):
    study = _study(tmp_path)
    rec = json.loads((study / "browse" / "errors.json").read_text())
    rec["rows"][0]["pred_a"] = 99  # not a class
    (study / "browse" / "errors.json").write_text(json.dumps(rec))
    render_report(study)
    assert 'id="browse"' not in (study / "report.html").read_text()
    assert B.load(study, "../../etc/passwd") is None


def test_csp_allows_exactly_the_browse_script(tmp_path):
    study = _study(tmp_path)
    doc = (study / "report.html").read_text()
    m = re.search(r"script-src 'sha256-([A-Za-z0-9+/=]+)'", doc)
    assert m and m.group(1) == BROWSE_JS_SHA256
    scripts = re.findall(r"<script>(.*?)</script>", doc, flags=re.S)
    assert scripts == [BROWSE_JS]
