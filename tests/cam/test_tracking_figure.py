"""The tracking figure puts each model's Grad-CAMs on that model's own scale."""

import numpy as np
import pytest

from cifarlens.cam.figures import model_scale, plot_tracking


def test_model_scale_is_the_99th_percentile_and_ignores_magnitude_differences():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (5, 32, 32))
    assert model_scale(a) == pytest.approx(np.percentile(a, 99))
    # a network with 10x larger activations gives the same normalised maps
    assert np.allclose(a / model_scale(a), (10 * a) / model_scale(10 * a))
    # one hot pixel does not set the scale
    b = a.copy()
    b[0, 0, 0] = 1e6
    assert model_scale(b) == pytest.approx(model_scale(a), rel=0.05)
    # all-zero maps: a positive scale, so nothing divides by zero
    assert model_scale(np.zeros((2, 4, 4))) > 0


def test_plot_tracking_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    rows = [{"rank": i + 1, "true_name": "cat", "pred_name": "dog", "confidence": 0.9,
             "label_error_suspect": bool(i), "variant": {"pred_name": "cat", "confidence": 0.7,
                                                        "status": "fixed"}} for i in range(2)]
    plot_tracking(imgs, rng.uniform(0, 1, (2, 32, 32)), 50 * rng.uniform(0, 1, (2, 32, 32)),
                  rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_still_offers_plot_tracking():
    """Moved to cam_figures; the study (and code importing it from there) keeps the names."""

    assert plot_tracking is plot_tracking and model_scale is model_scale
