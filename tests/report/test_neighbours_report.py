"""report/neighbours.py: the data side's sentences (pure functions on constructed numbers: a
sentence that concludes only where its test supports it) and its section in both reports."""

from __future__ import annotations

import copy
import html

import markupsafe
from summaries import summary_json

from cifarlens.report import neighbours as RN
from cifarlens.report.formats import md_escape
from cifarlens.report.render import render_report
from cifarlens.study.schema import summary_from_json

SHARE = {"n_failures": 30, "n_tested": 28, "n_classes": 9, "n_reference": 54,
         "mean_share": 0.41, "mean_reference": 0.12, "mean_diff": 0.29, "ci": [0.21, 0.37],
         "p": 0.0001, "alpha": 0.05, "resamples": 9999, "supported": True, "noise": "x",
         "n_claims": 0}
FIXED = {"n": 57, "n_clusters": 31, "mean_base": 0.371, "mean_variant": 0.219,
         "mean_diff": -0.152, "ci": [-0.23, -0.08], "p": 0.0011, "fell": True, "rose": False,
         "noise": "x"}
STILL = {"n": 148, "n_clusters": 60, "mean_base": 0.5, "mean_variant": 0.52, "mean_diff": 0.02,
         "ci": [-0.03, 0.06], "p": 0.56, "fell": False, "rose": False, "noise": "x"}


def test_the_share_sentence_concludes_only_when_supported():
    yes = RN.describe_share(SHARE, 8)
    assert yes.startswith("The baseline's failures sit among training images of their "
                          "predicted class: on average 41.0% of a failure's 8 nearest")
    assert "against 12.0%" in yes and "difference +0.29, 95% CI [+0.21, +0.37]" in yes
    assert "p = 1.0e-04" in yes and "not training seeds" in yes
    no = RN.describe_share({**SHARE, "supported": False, "p": 0.21, "ci": [-0.05, 0.4]}, 8)
    assert no.startswith("Not shown that the failures sit nearer their predicted class")
    assert "sit among" not in no and RN.SHARE_POWER in no  # what the test could detect
    few = RN.describe_share({**SHARE, "supported": False, "p": None, "ci": [None, None],
                             "n_classes": 3}, 8)
    assert few.startswith("Numbers only:") and "fewer than 5 true classes" in few
    none = RN.describe_share({**SHARE, "mean_share": None, "mean_reference": None}, 8)
    assert "not tested" in none


def test_claims_say_why_no_failure_gets_its_own_sentence():
    assert "1/7" in RN.describe_claims(SHARE)  # 54 reference images over 9 classes: 6 each
    assert RN.describe_claims({**SHARE, "n_claims": 3}).startswith("3 of the 30 failures")
    assert "does not support" in RN.describe_claims({**SHARE, "supported": False})


def test_the_change_through_the_data_concludes_only_when_the_share_fell():
    ch = {"slug": "variant", "change": "augment=crop-flip", "seed": 0, "fixed": FIXED,
          "still_wrong": STILL}
    fell = RN.describe_data_change(ch, 8)
    assert "the failures it fixed moved away from their old predicted class" in fell
    assert "37.1%" in fell and "21.9%" in fell and "[-0.23, -0.08]" in fell
    assert "p = 0.0011" in fell and "this pair of models only" in fell
    assert "moved +0.02 [-0.03, +0.06], so the fall is not a shift" in fell
    flat = RN.describe_data_change({**ch, "fixed": {**FIXED, "fell": False, "p": 0.3,
                                                    "ci": [-0.2, 0.05]}}, 8)
    assert flat.startswith("With augment=crop-flip (seed 0 pair), not shown") and \
        "moved away" not in flat.replace("not shown that the failures it fixed moved away", "")
    few = RN.describe_data_change({**ch, "fixed": {**FIXED, "ci": [None, None], "p": None,
                                                   "fell": False}}, 8)
    assert "numbers only" in few and "no test" in few
    assert "fixed none" in RN.describe_data_change({**ch, "fixed": {**FIXED, "n": 0}}, 8)
    rose = RN.describe_data_change({**ch, "fixed": {**FIXED, "fell": False, "rose": True,
                                                    "mean_diff": 0.15, "ci": [0.08, 0.23]}}, 8)
    assert "sit more among their old predicted class" in rose and "moved away" not in rose


def test_the_label_issue_sentence_gives_coverage_accuracy_and_measured_precision():
    li = {"n_flagged": 598, "n_covered": 2433, "coverage": 0.4866, "n_train": 5000,
          "seeds": [{"seed": 0, "n": 1000, "flagged": 200, "val_top1": 0.677},
                    {"seed": 1, "n": 1000, "flagged": 210, "val_top1": 0.653}]}
    t = RN.describe_label_issues(li)
    assert "flags 598 of the 2,433 training images" in t and "48.7% of the 5,000" in t
    assert "67.7%, 65.3% (by seed)" in t and RN.FLAG_PRECISION in t and "candidates" in t


def _data_side() -> dict:
    nb = [{"index": 10 + j, "label": 2, "similarity": 0.9 - j / 100, "name": "<i>oak</i>"}
          for j in range(3)]
    return {
        "layer": "classifier.4", "k": 3, "what": "alike", "run": "runs/baseline-s0",
        "failures": [{"rank": 1, "index": 1234, "true_name": "skyscraper",
                      "pred_name": "mountain", "share": 0.67, "claim": True, "pred": nb,
                      "true": nb[:1]}],
        "share": {**SHARE, "n_claims": 1},
        "changes": [{"slug": "variant", "change": "augment=crop-flip", "seed": 0,
                     "fixed": FIXED, "still_wrong": STILL}],
        "label_issues": {"method": "m", "n_train": 5000, "n_covered": 2433, "coverage": 0.4866,
                         "n_flagged": 1, "min_share": 0.5,
                         "seeds": [{"seed": 0, "n": 1000, "flagged": 1, "val_top1": 0.7}],
                         "top": [{"rank": 1, "index": 263, "label": "ray",
                                  "suggested": "maple_tree", "self_confidence": 0.0048,
                                  "votes": 1, "covering": 1, "neighbours": nb + nb[:1]}],
                         "csv": "label_issues.csv"}}


def test_the_section_in_both_reports_and_absent_without_data(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    s = summary_from_json(summary_json(data_side=_data_side()))
    h, m = (p.read_text() for p in render_report(study, s))
    assert '<section id="data-side">' in h and "The data side of the failures</h2>" in h
    assert "## 11 The data side of the failures" in m  # after Grad-CAM (10)
    for doc, esc in ((h, lambda t: str(markupsafe.escape(t))), (m, md_escape)):
        assert esc("The baseline's failures sit among training images") in doc
        assert esc("the model's representation places this image among mountain training "
                   "images") in doc  # its claim
        assert esc("moved away from their old predicted class") in doc
        assert esc("Label issues in the training set") in doc
        assert esc("<i>oak</i> ×4") in doc and "<i>oak</i>" not in doc  # counted, escaped
        assert esc("0.90–0.88") in doc  # the similarity range of the 3 nearest
    assert 'class="nb-thumbs"' not in h  # no browse atlas in this study: the table alone
    other = tmp_path / "o"
    other.mkdir()
    h2, m2 = (p.read_text() for p in render_report(other, summary_from_json(summary_json())))
    assert 'id="data-side"' not in h2 and "The data side" not in m2


def test_thumbnails_come_from_the_browser_atlas(tmp_path):
    from test_browse import _study

    study = _study(tmp_path)  # a browse record whose row 0 (image 11) has tiles
    ds = copy.deepcopy(_data_side())
    ds["k"] = 2
    ds["failures"][0].update(index=11, pred_name="oak_tree", true_name="maple_tree")
    raw = summary_json(data_side=ds, browse={"file": "browse/errors.json", "csv": None,
                                             "counts": {}, "rows": None})
    raw["figures"] = {}
    summary = summary_from_json(raw)
    h = render_report(study, summary)[0].read_text()
    i = h.index('class="nb-thumbs"')
    block = h[i:h.index("</div>\n<p class=\"note\">", i)]
    assert block.count('class="thumb"') == 1 + 4  # the failure and its 2 + 2 neighbours
    assert 'style="background-position:-0px -0px" title="true maple_tree, predicted oak_tree"' \
        in block  # the failure's own tile (row 0)
    assert 'background-position:-32px -0px" title="oak_tree (0.90)"' in block
    assert html.escape("&lt;b&gt;boy&lt;/b&gt; (0.80)") not in block and \
        "&lt;b&gt;boy&lt;/b&gt; (0.80)" in block  # escaped once
