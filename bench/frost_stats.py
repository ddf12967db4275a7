#!/usr/bin/env python
"""The colour statistics behind the frost stand-in (corruptions.FROST_MEAN, FROST_STD).

make_cifar_c.py blends each image with a random 32x32 crop of one of frost1-5 (randint(5): frost6
is never drawn) after cv2.resize(fx=0.2, fy=0.2). cifarlens does not ship the photographs; it
draws an ice texture with their statistics. This script measures them from the photographs as
packaged in imagecorruptions 1.1.2 (byte-identical to hendrycks/robustness' copies):

  pip download --no-deps imagecorruptions==1.1.2 -d /tmp/ic && unzip -q /tmp/ic/*.whl -d /tmp/ic
  PYTHONPATH=src .venv/bin/python bench/frost_stats.py /tmp/ic/imagecorruptions/frost \\
      --json bench/results/frost_stats.json

For fx = 0.2, OpenCV's INTER_LINEAR samples source pixel 5 x + 2 exactly (its centre mapping
(x + 0.5) / 0.2 - 0.5), so the resize is a subsampling, done here with numpy. Per photograph: the
mean RGB, the mean over random 32x32 crops of each channel's standard deviation, and the
roughness of a crop's grey level (std of horizontal neighbour differences / (sqrt 2 std): 1 for
white noise, near 0 for a smooth field), which sets the stand-in's white-noise share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import say, write_json  # noqa: E402

FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]


def stats(path: Path, crops: int, rng: np.random.Generator) -> dict:
    a = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    h, w = int(round(a.shape[0] * 0.2)), int(round(a.shape[1] * 0.2))
    small = a[2::5, 2::5][:h, :w]
    ys = rng.integers(0, small.shape[0] - 32, crops)
    xs = rng.integers(0, small.shape[1] - 32, crops)
    c = np.stack([small[y:y + 32, x:x + 32] for y, x in zip(ys, xs, strict=True)])
    grey = c.mean(-1)
    rough = np.diff(grey, axis=2).std(axis=(1, 2)) / (np.sqrt(2) * grey.std(axis=(1, 2)))
    return {"resized": list(small.shape), "mean_rgb": small.reshape(-1, 3).mean(0).round(1).tolist(),
            "within_crop_std_rgb": c.std(axis=(1, 2)).mean(0).round(1).tolist(),
            "roughness": round(float(rough.mean()), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="folder holding frost1.png ... frost5.jpg")
    p.add_argument("--crops", type=int, default=500)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    out = {f: stats(a.folder / f, a.crops, rng) for f in FILES}
    for f, s in out.items():
        say(f"{f}: mean {s['mean_rgb']}, within-crop std {s['within_crop_std_rgb']}, "
            f"roughness {s['roughness']}")
    write_json(a.json, {"args": {"crops": a.crops}, "photographs": out})


if __name__ == "__main__":
    main()
