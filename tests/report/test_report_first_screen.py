"""The report's first screen (the answer at 1366x768, checked in headless Chromium) and its
weight (each image embedded once, photo grids as JPEG, lazy below the first screen)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_report import (
    CHROMIUM_FLAGS,
    _chromium,
    _console,
    _three_seeds,
    make_study,
    make_summary,
)

from cifarlens.report.constants import PHOTO_FIGURES, PHOTO_MAX_WIDTH
from cifarlens.report.embed import compact_image
from cifarlens.report.first_screen import first_screen_ablation
from cifarlens.report.render import render_report
from cifarlens.report.view import View
from cifarlens.study.schema import summary_from_json

# Records where the answer's parts lie, into the DOM, for --dump-dom to read back.
PROBE = """<script>
window.addEventListener('load', () => {
  const out = {};
  for (const [name, sel] of Object.entries({
      baseline: '#answer .arm-baseline .value', variant: '#answer .arm-variant .value',
      diff: '#answer .diff .value', badge: '#seed-badge', curves: '#fig-curves img',
      strip: '#fig-gradcam_tracking img', replication: '#answer table',
      cost: '#cost-line', toc: 'nav.toc'})) {
    const el = document.querySelector(sel);
    if (!el) { out[name] = null; continue; }
    const r = el.getBoundingClientRect();
    out[name] = {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                 height: r.height, width: r.width};
  }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG of the size the study draws (a plot-like image: flat colours and lines)."""
    im = Image.new("RGB", size, "white")
    px = im.load()
    for x in range(0, size[0], 7):
        for y in range(size[1]):
            px[x, (y * (seed + 3)) % size[1]] = (0, 114, 178)
    for x in range(10 * seed, 10 * seed + 8):  # a mark per seed: no two alike
        px[x % size[0], 5] = (230, 159, 0)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _photo_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A noisy, photo-like PNG (a grid of images with Grad-CAM overlays compresses like this)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _real_sized_study(tmp_path: Path, summary: dict[str, Any]) -> Path:
    """The demo's figure sizes (curves 1350x510, tracking 990x4020, ...), so the layout is the
    one a user sees."""
    pngs = {k: _png((900, 600), i) for i, k in enumerate(make_summary()["figures"])}
    pngs["curves"] = _png((1350, 510))
    pngs["gradcam_tracking"] = _photo_png((990, 4020))
    pngs["failure_gallery"] = _photo_png((1560, 1305), 1)
    pngs["gradcam_failures"] = _photo_png((1162, 3225), 2)
    study, _ = make_study(tmp_path, pngs, summary)
    return study


def _positions(exe: str, tmp_path: Path, page: Path) -> dict[str, Any]:
    # The probe is not our hashed script, so it runs in a copy without the CSP meta tag.
    doc = page.read_text(encoding="utf-8")
    doc = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", doc)
    probe = tmp_path / "probe.html"
    probe.write_text(doc.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--window-size=1366,768", "--virtual-time-budget=3000", "--dump-dom",
                          probe.resolve().as_uri()], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _console(res.stderr), _console(res.stderr)
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe did not run"
    import html

    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize("seeds", [3, 1])
def test_first_screen_answers_the_question_in_chromium(tmp_path, seeds):
    exe = _chromium()
    s = make_summary()
    if seeds == 3:
        s = _three_seeds(s, mean_diff=0.0611, ci=[0.0511, 0.0711], p=0.0013)
    study = _real_sized_study(tmp_path, s)
    h, _ = render_report(study)
    pos = _positions(exe, tmp_path, h)
    # the big numbers, the badge, the seed-report table, the curves and the cost line are all
    # on the first 1366x768 screen (the generated-data banner included)
    for part in ("baseline", "variant", "diff", "badge", "replication", "curves", "cost"):
        assert pos[part] is not None, part
        assert 0 <= pos[part]["top"] and pos[part]["bottom"] <= 768, (part, pos[part])
    # the curves are shown at a readable size, not a thumbnail
    assert pos["curves"]["width"] >= 450, pos["curves"]
    # the tracked failures' strip starts on the first screen too
    assert pos["strip"] is not None and pos["strip"]["top"] < 768 - 150, pos["strip"]
    # the numbers are large, and the contents list comes after the answer
    assert pos["baseline"]["height"] >= 30 and pos["diff"]["height"] >= 30
    assert pos["toc"]["top"] > pos["curves"]["bottom"]
    doc = h.read_text(encoding="utf-8")
    badge = re.search(r'<span class="badge( warn)?" id="seed-badge"[^>]*>([^<]*)</span>', doc)
    assert badge
    if seeds == 3:
        assert badge.group(1) is None and badge.group(2) == "3 seeds"
        assert ">6.11 points<" not in doc and ">+6.11 points<" in doc
        assert "95% CI [5.11, 7.11]" in doc
    else:
        assert badge.group(1) == " warn" and "training noise not measured" in badge.group(2)
        assert ">+6.63 points<" in doc and "95% CI [5.80, 7.46]" in doc


def test_details_are_collapsible_and_markdown_keeps_the_order(tmp_path):
    s = _three_seeds(make_summary(), mean_diff=0.0611, ci=[0.0511, 0.0711], p=0.0013)
    study = _real_sized_study(tmp_path, s)
    h, m = (p.read_text(encoding="utf-8") for p in render_report(study))
    for sid in ("dataset", "training-setup", "calibration", "grad-cam", "reproducibility"):
        assert re.search(rf'<section id="{sid}">\s*<details>\s*<summary>', h), sid
    for sid in ("summary", "comparison", "failure-cases"):
        assert re.search(rf'<section id="{sid}">\s*<details open>', h), sid
    assert h.index('id="answer"') < h.index('class="toc"') < h.index('<section id="replication"')
    # Markdown: the same answer first, nothing collapsed
    first = m.index("**Baseline 63.01%**")
    assert first < m.index("](figures/curves.png)") < m.index("## Contents")
    assert "**3 seeds**" in m and "<details" not in m
    # the first screen's figures are embedded once, and their sections point to them
    assert h.count('id="fig-curves"') == 1
    assert "Figure 1 (training and validation loss" in h
    assert "is shown at the top of the report" in m


def _data_uris(doc: str) -> list[str]:
    return re.findall(r'src="(data:image/[a-z]+;base64,[^"]+)"', doc)


def test_no_image_embedded_twice_photos_as_jpeg_and_lazy(tmp_path):
    s = make_summary()
    # the same file listed under two keys (and an identical copy under a third)
    s["figures"]["confidence_hist"] = s["figures"]["reliability"]
    study = _real_sized_study(tmp_path, s)
    (study / "figures" / "copy.png").write_bytes((study / "figures" / "reliability.png")
                                                 .read_bytes())
    s["figures"]["extra_copy"] = "figures/copy.png"
    (study / "summary.json").write_text(json.dumps(s))
    h, _ = render_report(study)
    doc = h.read_text(encoding="utf-8")
    uris = _data_uris(doc)
    assert len(uris) == len(set(uris)) and len(uris) >= 8
    assert doc.count("The same image as Figure") == 2
    for key in PHOTO_FIGURES:
        mime, data = re.search(rf'<figure id="fig-{key}">.*?src="data:(image/\w+);base64,'
                               r'([^"]+)"', doc, re.S).groups()
        assert mime == "image/jpeg", key
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "JPEG" and im.width <= PHOTO_MAX_WIDTH
    # plots stay PNG; each smaller than the file it came from, or that file itself
    mime, data = re.search(r'<figure id="fig-confusion">.*?src="data:(image/\w+);base64,'
                           r'([^"]+)"', doc, re.S).groups()
    raw = (study / "figures" / "confusion.png").read_bytes()
    assert mime == "image/png" and len(base64.b64decode(data)) <= len(raw)
    # every image below the first screen loads lazily; the first screen's do not
    for tag in re.findall(r"<img [^>]*>", doc):
        first = any(f'Figure {n}:' in tag for n in (1, 2))
        assert ('loading="lazy"' in tag) != first, tag[:80] + tag[-80:]


def test_compact_image_keeps_the_picture():
    import numpy as np

    plot = _png((600, 400))
    mime, out = compact_image(plot, photo=False)
    assert mime == "image/png" and len(out) <= len(plot)
    a = np.asarray(Image.open(io.BytesIO(plot)).convert("RGB"), float)
    b = np.asarray(Image.open(io.BytesIO(out)).convert("RGB"), float)
    assert a.shape == b.shape and np.percentile(np.abs(a - b).max(axis=2), 99) <= 4
    photo = _photo_png((1600, 800))
    mime, out = compact_image(photo, photo=True)
    with Image.open(io.BytesIO(out)) as im:
        assert mime == "image/jpeg" and im.size == (800, 400)
    assert len(out) < len(photo) / 3
    assert hashlib.sha256(out).digest() == hashlib.sha256(compact_image(photo, True)[1]).digest()


def test_first_screen_ablation_hook(tmp_path):
    v = View(summary_from_json(make_summary()), tmp_path)
    assert first_screen_ablation(v) == []
    s = make_summary()
    def row(change, key, base, var, diff, lo, hi, p, p_holm, verdict):
        return {"change": change, "key": key, "slug": key, "baseline_value": base,
                "variant_value": var, "before": 0.63, "after": 0.63 + diff, "diff": diff,
                "lo": lo, "hi": hi, "p": p, "p_holm": p_holm, "verdict": verdict, "n_seeds": 3,
                "per_seed_mcnemar": []}

    s["ablation"] = {"method": "paired t", "test": "paired_t", "correction": "holm", "m": 2,
                     "alpha": 0.05, "level": 0.95, "covers": "training seeds and test images",
                     "per_seed_covers": "test images", "rows": [
        row("augment: none → crop-flip", "augment", "none", "crop-flip", 0.0611, 0.0511, 0.0711,
            0.0013, 0.0026, "helped"),
        row("dropout: 0.2 → 0.5", "dropout", 0.2, 0.5, -0.004, -0.012, 0.004, 0.31, 0.31,
            "no significant difference")]}
    (block,) = first_screen_ablation(View(summary_from_json(s), tmp_path))
    assert block["rows"][0] == ["augment: none → crop-flip", "+6.11", "[5.11, 7.11]", "0.0013",
                                "0.0026", "helped"]
    assert block["rows"][1][1:3] == ["-0.40", "[-1.20, 0.40]"]
    study, _ = make_study(tmp_path / "s", {}, s)
    h = render_report(study)[0].read_text(encoding="utf-8")
    a = h.index('id="answer"')
    assert a < h.index("dropout: 0.2 → 0.5") < h.index('class="toc"')
