#!/usr/bin/env python3
"""Regenerate the README's images from a demo study, so they never drift from the report.

    cifarlens demo --out cifarlens-demo
    python scripts/readme_images.py cifarlens-demo/study

The images are the study's own figures, drawn by the report's figure code (cam_figures.py,
plots.py) when the study ran: figures/gradcam_tracking.png (baseline failures tracked in the
variant) and the first baseline run's Grad-CAM of its failures. They are copied, checked to be
PNGs, into docs/images/ (written atomically: a failed copy leaves the old image)."""

from __future__ import annotations

import argparse
import os
import shutil
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a finished demo study folder (e.g. cifarlens-demo/study)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="image folder")
    a = p.parse_args(argv)
    todo = sources(a.study)
    for src in todo.values():  # every source checked before the first image is replaced
        if not src.is_file():
            raise SystemExit(f"error: {src} is missing; is {a.study} a finished study?")
    for name, src in todo.items():
        copy_atomic(src, a.out / name)
        print(f"{a.out / name} <- {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
