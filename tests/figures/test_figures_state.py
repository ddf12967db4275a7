"""Importing or plotting with cifarlens leaves the user's matplotlib state alone (issue 12): the
backend, every rcParam and pyplot's open figures are the same before and after."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import matplotlib
matplotlib.use("svg")  # the user's own choice, which cifarlens must keep
import matplotlib.pyplot as plt
import numpy as np

plt.rcParams["font.size"] = 13.0
before = dict(matplotlib.rcParams)
fig, ax = plt.subplots()
ax.set_yscale("log"); ax.plot([1, 2, 3], [0.01, 0.1, 1])
figs_before = plt.get_fignums()

import cifarlens.analysis.metrics as M
import cifarlens.figures.plots as P
from cifarlens.cam.figures import plot_explanations

rng = np.random.default_rng(0)
P.plot_reliability(M.calibration_bins(rng.random(200), rng.random(200) > 0.5), OUT + "/r.png")
P.plot_confusion(np.array([[3, 1], [2, 4]]), ["a$x$", "b"], OUT + "/c.png")
P.plot_per_class_changes(np.array([[3, 1], [2, 4]]), np.array([[4, 0], [1, 5]]), ["a", "b"],
                         OUT + "/p.png")
plot_explanations(rng.integers(0, 255, (1, 32, 32, 3)).astype(np.uint8), rng.random((1, 32, 32)),
                  rng.random((1, 32, 32)), ["t"], OUT + "/g.png", pred_names=["a"],
                  true_names=["b"], confidences=[0.5])

assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
changed = {k for k, v in matplotlib.rcParams.items() if before[k] != v}
assert not changed, changed
assert plt.get_fignums() == figs_before
# the user's log axis still renders matplotlib's own mathtext tick labels
fig.canvas.draw()
labels = [t.get_text() for t in ax.get_yticklabels()]
assert any("mathdefault" in s for s in labels) and matplotlib.rcParams["text.parse_math"]
print("ok")
"""


def test_plotting_with_cifarlens_keeps_the_users_matplotlib_state(tmp_path):
    r = subprocess.run([sys.executable, "-c", f"OUT = {str(tmp_path)!r}\n" + CODE],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    for name in ("r", "c", "p", "g"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


BAD_BACKEND = r"""
import os
import numpy as np
import cifarlens.figures.plots as P
from cifarlens.cam.figures import plot_explanations

rng = np.random.default_rng(0)
P.plot_confusion(np.array([[3, 1], [2, 4]]), ["a", "b"], OUT + "/c.png")
plot_explanations(rng.integers(0, 255, (1, 32, 32, 3)).astype(np.uint8), rng.random((1, 32, 32)),
                  rng.random((1, 32, 32)), ["t"], OUT + "/g.png", pred_names=["a"],
                  true_names=["b"], confidences=[0.5])
assert os.environ["MPLBACKEND"] == "nonsense"  # the user's environment is left as it was
print("ok")
"""


def test_an_invalid_mplbackend_does_not_stop_the_figures(tmp_path):
    # cifarlens never uses a backend, but matplotlib validates MPLBACKEND on import (issue 20)
    import os

    env = {**os.environ, "MPLBACKEND": "nonsense"}
    r = subprocess.run([sys.executable, "-c", f"OUT = {str(tmp_path)!r}\n" + BAD_BACKEND],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    for name in ("c", "g"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
