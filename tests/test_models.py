import json
import subprocess
import sys

import pytest
import torch

from cifarlens.complexity import complexity
from cifarlens.errors import CifarlensError
from cifarlens.models import build_model


def test_baseline_matches_the_seed_report_exactly():
    c = complexity(build_model("baseline", 100))
    assert c["params"] == 10_462_756 and c["trainable_params"] == 10_462_756
    assert c["flops"] == 650_612_736


def test_baseline_shape_and_cam_layer():
    m = build_model("baseline", 100).eval()
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 11 and convs[-1].out_channels == 512
    seen = {}
    h = m.cam_layer.register_forward_hook(lambda mod, i, o: seen.update(shape=o.shape))
    m(torch.zeros(1, 3, 32, 32))
    h.remove()
    assert seen["shape"] == (1, 512, 4, 4)  # rectified last conv output, before its pool


def test_cifar10_head_and_unknown_model():
    assert complexity(build_model("baseline", 10))["params"] == 10_462_756 - 90 * 512 - 90
    with pytest.raises(CifarlensError, match="choose from: baseline"):
        build_model("resnet999", 100)


def test_complexity_cli_json():
    out = subprocess.run([sys.executable, "-m", "cifarlens", "complexity", "--json"],
                         capture_output=True, text=True, check=True)
    c = json.loads(out.stdout)
    assert c["params"] == 10_462_756 and c["flops"] == 650_612_736
