"""Every Grad-CAM figure draws maps one way (issue 12): one colormap, bilinear resizing, a
colour bar, and overlay panels that are exactly `cam_figures.overlay` of the drawn image and map."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import AxesImage

from cifarlens.cam import figures as cam_figures
from cifarlens.cam.figures import (
    CAM_CMAP,
    CAM_INTERPOLATION,
    model_scale,
    overlay,
    plot_explanations,
    plot_tracking,
)
from cifarlens.cam.gradcam import resize_maps


@pytest.fixture
def saved(monkeypatch):
    """The figures handed to save_figure (still saved)."""
    figs: list = []
    real = cam_figures.save_figure

    def spy(fig, path, **kw):
        figs.append(fig)
        real(fig, path, **kw)

    monkeypatch.setattr(cam_figures, "save_figure", spy)
    return figs


def _panels(fig):
    """Image arrays per plotting axes (colour bar axes left out), in axes order."""
    return [[im for im in ax.get_images()] for ax in fig.axes
            if getattr(ax, "_colorbar", None) is None]


def _check_style(fig):
    bars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 1, "a map figure needs one colour bar"
    assert bars[0].cmap.name == CAM_CMAP and (bars[0].vmin, bars[0].vmax) == (0, 1)
    for im in fig.findobj(AxesImage):
        if np.asarray(im.get_array()).ndim == 2:  # a colour-mapped map, not an RGB picture
            assert im.get_cmap().name == CAM_CMAP
            assert im.get_interpolation() == CAM_INTERPOLATION


def _rows():
    return [{"rank": i + 1, "true_name": "cat", "pred_name": "dog", "confidence": 0.9,
             "label_error_suspect": bool(i), "variant": {"pred_name": "cat", "confidence": 0.7,
                                                        "status": "fixed"}} for i in range(3)]


def test_explanations_figure_style_and_overlays(tmp_path, saved):
    g = np.random.default_rng(0)
    imgs = g.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    mp, mt = g.uniform(0, 2, (3, 32, 32)), g.uniform(0, 1, (3, 32, 32))
    mt[2] = 0  # no evidence for the true class: a black panel, with a note
    plot_explanations(imgs, mp, mt, ["a", "b", "c"], tmp_path / "g.png", pred_names="xyz",
                      true_names="uvw", confidences=[0.9, 0.8, 0.7])
    (fig,) = saved
    _check_style(fig)
    panels = _panels(fig)
    assert len(panels) == 15
    for i in range(3):
        img, m1, o1, m2, o2 = (p[0].get_array() for p in panels[5 * i:5 * i + 5])
        assert np.array_equal(img, imgs[i].repeat(4, 0).repeat(4, 1))
        norm = max(mp[i].max(), mt[i].max())
        # maps are resized bilinearly like gradcam(upsample=True), not blown up in blocks
        np.testing.assert_allclose(m1, np.clip(resize_maps(mp[i] / norm, (128, 128)).numpy(),
                                               0, 1), atol=1e-6)
        assert np.array_equal(o1, overlay(img, m1)) and np.array_equal(o2, overlay(img, m2))
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("black = no evidence" in t for t in titles) == 1


def test_tracking_figure_style_and_per_model_overlays(tmp_path, saved):
    g = np.random.default_rng(1)
    imgs = g.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    ma, mb = g.uniform(0, 1, (3, 32, 32)), 50 * g.uniform(0, 1, (3, 32, 32))
    plot_tracking(imgs, ma, mb, _rows(), tmp_path / "t.png")
    (fig,) = saved
    _check_style(fig)
    panels = _panels(fig)
    assert len(panels) == 9 and all(len(p) == 1 for p in panels)  # one picture per panel
    for r in range(3):
        img, oa, ob = (p[0].get_array() for p in panels[3 * r:3 * r + 3])
        for got, m in ((oa, ma), (ob, mb)):
            want = np.clip(resize_maps(m[r] / model_scale(m), (128, 128)).numpy(), 0, 1)
            assert np.array_equal(got, overlay(img, want))
    assert "jet" not in {im.get_cmap().name for im in fig.findobj(AxesImage)}
