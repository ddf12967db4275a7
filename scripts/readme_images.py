#!/usr/bin/env python3
"""Regenerate the README's images from a demo study, so they never drift from the report.

    cifarlens demo --out cifarlens-demo
    python scripts/readme_images.py cifarlens-demo/study

The images are the study's own: figures/gradcam_tracking.png (baseline failures tracked in the
variant) and the first baseline run's Grad-CAM of its failures, drawn by the report's figure code
(cam/figures.py, figures/plots.py) when the study ran, and the report's first screen as headless
Chromium shows report.html in a 1366x768 window (`--no-screenshot` skips it where Chromium is not
installed). Each is checked to be a PNG and written into docs/images/ atomically: a failed step
leaves the old image."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def sources(study: Path) -> dict[str, Path]:
    figures = study / "figures"
    gradcam = sorted(figures.glob("baseline-s*_figures_gradcam_test.png"))
    if not gradcam:
        raise SystemExit(f"error: {figures} has no baseline Grad-CAM figure; is {study} a finished study?")
    return {"demo_tracking.png": figures / "gradcam_tracking.png", "demo_gradcam.png": gradcam[0]}


def copy_atomic(src: Path, dest: Path) -> None:
    if not src.is_file() or src.read_bytes()[:8] != PNG:
        raise SystemExit(f"error: {src} is not a PNG figure of a finished study")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--window-size=1366,768"]


def first_screen(study: Path, dest: Path) -> None:
    """report.html's first screen (1366x768) as a PNG, via headless Chromium."""
    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("error: chromium is not installed (apt-get install chromium), or pass "
                         "--no-screenshot")
    page = study / "report.html"
    if not page.is_file():
        raise SystemExit(f"error: {page} is missing; is {study} a finished study?")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "first.png"
        subprocess.run([exe, *CHROMIUM, f"--user-data-dir={tmp}/profile",
                        f"--screenshot={shot}", page.resolve().as_uri()],
                       capture_output=True, timeout=120, check=False)
        copy_atomic(shot, dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a finished demo study folder (e.g. cifarlens-demo/study)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="image folder")
    p.add_argument("--no-screenshot", action="store_true",
                   help="leave report_first_screen.png as it is (no Chromium needed)")
    a = p.parse_args(argv)
    todo = sources(a.study)
    for src in todo.values():  # every source checked before the first image is replaced
        if not src.is_file():
            raise SystemExit(f"error: {src} is missing; is {a.study} a finished study?")
    for name, src in todo.items():
        copy_atomic(src, a.out / name)
        print(f"{a.out / name} <- {src}")
    if not a.no_screenshot:
        first_screen(a.study, a.out / "report_first_screen.png")
        print(f"{a.out / 'report_first_screen.png'} <- {a.study / 'report.html'} (1366x768)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
