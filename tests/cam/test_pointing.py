"""Grad-CAM points at the object on generated data, where each object's box is known."""

import numpy as np
import pytest
import torch

from cifarlens.cam import gradcam as G
from cifarlens.cam import quality as M
from cifarlens.data.synth import read_synth_info
from cifarlens.runs import load_model, load_split
from cifarlens.training.config import make_config
from cifarlens.training.loop import train
from cifarlens.training.models import build_model


@pytest.fixture(scope="module")
def trained10(tmp_path_factory, synth10):
    out = tmp_path_factory.mktemp("pg") / "run"
    train(make_config("smoke", dataset="cifar10", data_dir=str(synth10), device="cpu", epochs=8),
          out, progress=False, log=lambda m: None)
    return out


def _correct_with_boxes(run, synth10):
    model, _ = load_model(run)
    x, y, idx = load_split(run, "test")
    with torch.no_grad():
        pred = model(x).argmax(1)
    ok = (pred == y).numpy()
    boxes = np.asarray(read_synth_info(synth10 / "cifar-10-batches-py")["boxes"]["test"])[idx]
    return model, x[ok], pred[ok], boxes[ok], ok.mean()


def test_pointing_game_on_generated_objects(trained10, synth10):
    model, x, pred, boxes, acc = _correct_with_boxes(trained10, synth10)
    assert acc > 0.8 and len(x) >= 200
    # The 8x8 map of the second-to-last conv stage localises the object...
    mid = dict(model.named_modules())["features.10"]
    hits = M.pointing_game(G.gradcam(model, x, pred, layer=mid), boxes)
    assert hits.mean() >= 0.90, hits.mean()
    # ...an untrained model with the same architecture does not.
    torch.manual_seed(0)
    rnd = build_model("small", 10).eval()
    rnd_hits = M.pointing_game(G.gradcam(rnd, x, pred, layer=dict(rnd.named_modules())["features.10"]),
                               boxes)
    assert rnd_hits.mean() < 0.5, rnd_hits.mean()
    # The default last-layer map (4x4, as in the seed report) still beats the random model, but
    # is too coarse to localise reliably; docs/analysis.md records the measured rates.
    last = M.pointing_game(G.gradcam(model, x, pred), boxes).mean()
    assert last > rnd_hits.mean()
