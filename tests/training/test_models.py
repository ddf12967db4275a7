import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cifarlens.errors import CifarlensError
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.options import StudyOptions
from cifarlens.study.schema import to_json
from cifarlens.training.complexity import complexity
from cifarlens.training.models import build_model


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
    with pytest.raises(CifarlensError, match="choose from: vgg, small, resnet18"):
        build_model("resnet999", 100)


def test_complexity_cli_json():
    out = subprocess.run([sys.executable, "-m", "cifarlens", "complexity", "--json"],
                         capture_output=True, text=True, check=True)
    c = json.loads(out.stdout)
    assert c["params"] == 10_462_756 and c["flops"] == 650_612_736


def test_resnet18_is_the_cifar_layout_with_its_known_size():
    m = build_model("resnet18", 100).eval()
    c = complexity(m)
    # pytorch-cifar100's ResNet-18: 11.2 M parameters, 0.56 G multiply-adds per image
    assert c["params"] == 11_220_132 and c["flops"] == 1_110_937_600
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)  # CIFAR stem
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert len(convs) == 17 + 3  # 1 stem + 16 block convs + 3 projection shortcuts
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert complexity(build_model("resnet18", 10))["params"] == 11_220_132 - 90 * 513


def test_resnet18_cam_layer_is_the_last_4x4_map_and_registered_once():
    from cifarlens.cam.gradcam import find_cam_layer

    m = build_model("resnet18", 100).eval()
    layer = find_cam_layer(m)
    assert layer is m.layer4[1]
    seen = {}
    h = layer.register_forward_hook(lambda mod, i, o: seen.update(shape=o.shape))
    m(torch.zeros(1, 3, 32, 32))
    h.remove()
    assert seen["shape"] == (1, 512, 4, 4)
    assert not any(k.startswith("cam_layer") for k in m.state_dict())


def test_resnet18_trains_a_few_steps_with_finite_falling_loss():
    torch.manual_seed(0)
    m = build_model("resnet18", 10).train()
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["baseline", "small", "resnet18"])
def test_layer_table_rows_sum_to_the_totals(name):
    from cifarlens.training.complexity import layer_table

    m = build_model(name, 100)
    c = complexity(m)
    for depth in (None, 1, 2):
        rows = layer_table(m, depth=depth)
        assert sum(r["params"] for r in rows) == c["params"], depth
        assert sum(r["flops"] for r in rows) == c["flops"], depth
    first = layer_table(m)[0]
    assert first["type"] == "Conv2d" and first["output_shape"][1:] == (32, 32)
    assert first["flops"] == 2 * 3 * 9 * first["output_shape"][0] * 32 * 32


def test_layer_table_counts_functional_ops_and_shared_weights_once():
    from cifarlens.training.complexity import layer_table

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.w = torch.nn.Parameter(torch.zeros(10, 4))  # used by a functional linear

        def forward(self, x):
            x = self.conv(self.conv(x)[:, :3])  # the same conv twice
            return torch.nn.functional.linear(x.mean((2, 3)), self.w)

    m = Odd()
    rows = {r["name"]: r for r in layer_table(m)}
    c = complexity(m)
    assert sum(r["params"] for r in rows.values()) == c["params"] == 3 * 4 * 9 + 4 + 40
    assert sum(r["flops"] for r in rows.values()) == c["flops"]
    assert rows[""]["flops"] == 2 * 4 * 10 and rows[""]["params"] == 40  # the model's own linear
    assert rows["conv"]["calls"] == 2 and rows["conv"]["flops"] == 2 * 2 * 27 * 4 * 32 * 32


def test_complexity_cli_units_and_layers_json():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cifarlens", "complexity", *args],
                              capture_output=True, text=True, check=True).stdout

    assert "(0.65 GFLOPs" in run()
    assert "(8.28 MFLOPs" in run("--model", "small")
    rows = json.loads(run("--model", "small", "--layers", "--json"))
    assert isinstance(rows, list) and rows[0]["name"] == "features.0"
    assert sum(r["flops"] for r in rows) == 8_275_968
    assert sum(r["params"] for r in rows) == 254_948
    text = run("--model", "resnet18", "--depth", "1")
    assert "layer4" in text and "11,220,132" in text and "1.11 GFLOPs" in text


def test_fmt_flops_rule():
    from cifarlens._units import fmt_flops

    assert fmt_flops(650_612_736) == "0.65 GFLOPs"
    assert fmt_flops(8_275_968) == "8.28 MFLOPs"
    assert fmt_flops(1e8) == "0.10 GFLOPs" and fmt_flops(99_999_999) == "100.00 MFLOPs"
    assert fmt_flops(5000) == "5,000 FLOPs" and fmt_flops(None) == "n/a"


# --- the user's own model -----------------------------------------------------------------------

USER_MODULE = '''
import torch
from torch import nn

def net(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))

def boom(num_classes):
    raise ValueError("no such width")

def not_a_module(num_classes):
    return 42

def wrong_shape(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes + 1))

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch, request):
    name = f"userzoo_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, path
    sys.modules.pop(name, None)


def test_user_factory_builds_counts_and_records_its_source(user_module):
    import hashlib

    from cifarlens.training.models import model_source

    name, path = user_module
    m = build_model(f"{name}:net", 7)
    assert m(torch.zeros(3, 3, 32, 32)).shape == (3, 7)
    assert complexity(m)["params"] == 3 * 8 * 9 + 8 + 8 * 7 + 7
    src = model_source(f"{name}:net")
    assert src == {"kind": "user", "ref": f"{name}:net", "file": str(path.resolve()),
                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    from cifarlens._version import __version__

    assert model_source("resnet18") == {"kind": "builtin", "ref": "cifarlens.training.models:resnet18",
                                        "cifarlens": __version__}


def test_user_factory_errors_are_one_line(user_module):
    name, _ = user_module
    cases = {
        "nonexistent_mod_xyz:net": "cannot import module 'nonexistent_mod_xyz'",
        f"{name}:missing": f"module '{name}' has no attribute 'missing'",
        f"{name}:NOT_CALLABLE": "not a callable factory",
        f"{name}:boom": "the factory raised ValueError: no such width",
        f"{name}:not_a_module": "returned a int, not a torch.nn.Module",
        f"{name}:wrong_shape": r"gave output \(1, 8\), expected \(1, 7\)",
        "not a model": "choose from: vgg, small, resnet18",
    }
    for ref, msg in cases.items():
        with pytest.raises(CifarlensError, match=msg) as e:
            build_model(ref, 7)
        assert "\n" not in str(e.value)


def test_user_factory_with_a_changed_source_is_refused(user_module):
    from cifarlens.training.models import model_source

    name, path = user_module
    recorded = model_source(f"{name}:net")
    build_model(f"{name}:net", 5, source=recorded)  # unchanged: fine
    path.write_text(USER_MODULE + "\n# edited\n")
    with pytest.raises(CifarlensError, match="changed since the run recorded it"):
        build_model(f"{name}:net", 5, source=recorded)


def test_user_factory_broken_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "userzoo_broken.py").write_text("raise RuntimeError('bad import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CifarlensError, match="importing 'userzoo_broken' failed: RuntimeError"):
        build_model("userzoo_broken:net", 10)


# --- models as training settings, end to end ----------------------------------------------------


def _tiny_cfg(data, **kw):
    from cifarlens.training.config import make_config

    base = dict(data_dir=str(data), dataset="cifar10", device="cpu", epochs=1, batch_size=32,
                train_limit=64, precision="fp32")
    return make_config("smoke", **{**base, **kw})


def test_resnet18_trains_through_train_with_finite_loss(synth10, tmp_path):
    from cifarlens.runs import load_model
    from cifarlens.training.loop import train

    done = train(_tiny_cfg(synth10, model="resnet18"), tmp_path / "r", progress=False,
                 log=lambda m: None)
    assert np.isfinite(done["final"]["train_loss"]) and np.isfinite(done["final"]["val_loss"])
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model_source"]["ref"] == "cifarlens.training.models:resnet18"
    model, _ = load_model(tmp_path / "r")
    assert type(model).__name__ == "ResNet"


def test_user_model_run_records_provenance_and_refuses_a_changed_source(
        synth10, tmp_path, user_module):
    from cifarlens.runs import load_model
    from cifarlens.training.loop import train

    name, path = user_module
    cfg = _tiny_cfg(synth10, model=f"{name}:net", epochs=2)
    train(cfg, tmp_path / "u", progress=False, log=lambda m: None)
    rec = json.loads((tmp_path / "u" / "config.json").read_text())
    assert rec["model"] == f"{name}:net" and rec["model_source"]["file"] == str(path.resolve())
    model, _ = load_model(tmp_path / "u")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    (tmp_path / "u" / "done.json").unlink()  # pretend it stopped, then edit the source
    path.write_text(USER_MODULE.replace("nn.Conv2d(3, 8", "nn.Conv2d(3, 8 ") + "\n")
    with pytest.raises(CifarlensError, match="changed since"):
        train(cfg, tmp_path / "u", resume=True, progress=False, log=lambda m: None)
    with pytest.raises(CifarlensError, match="changed since"):
        load_model(tmp_path / "u")


def test_a_bad_user_model_fails_before_any_file_is_written(tmp_path):
    from cifarlens.training.config import make_config

    with pytest.raises(CifarlensError, match="cannot import module"):
        make_config("smoke", model="no_such_pkg_qq.models:net")
    r = subprocess.run([sys.executable, "-m", "cifarlens", "train", "--preset", "smoke",
                        "--model", "no_such_pkg_qq:net", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_model_is_a_one_change_setting():
    import dataclasses

    from cifarlens.study.plan import one_change_guard, parse_change
    from cifarlens.training.config import make_config

    assert parse_change("model=resnet18") == ("model", "resnet18")
    assert parse_change("model=mypkg.nets:wide") == ("model", "mypkg.nets:wide")
    a = make_config("smoke")
    assert one_change_guard(a, dataclasses.replace(a, model="resnet18")) == "model"
    with pytest.raises(CifarlensError, match="2 settings"):
        one_change_guard(a, dataclasses.replace(a, model="resnet18", lr=0.1))


def test_study_compares_two_architectures(synth100, tmp_path, user_module):
    from cifarlens.study.run import run_study

    name, _ = user_module
    s = run_study(tmp_path / "s", preset="smoke", changes=f"model={name}:net",
                  options=StudyOptions(failures_top=2),
                  overrides={"data_dir": str(synth100), "device": "cpu", "epochs": 1,
                             "train_limit": 500}, engine=LocalEngine(progress=False), log=lambda m: None)
    s = to_json(s)  # the summary as summary.json holds it
    assert s["variants"][0]["change"] == {"key": "model", "baseline": "small", "variant": f"{name}:net"}
    assert s["baseline"]["params"] == 254_948
    assert s["variants"][0]["model"]["params"] == 3 * 8 * 9 + 8 + 8 * 100 + 100
    for arm, ref in (("baseline", "cifarlens.training.models:small"), ("variant", f"{name}:net")):
        cfg = json.loads((tmp_path / "s" / "runs" / f"{arm}-s0" / "config.json").read_text())
        assert cfg["model_source"]["ref"] == ref


def test_seed_architecture_is_vgg_and_baseline_stays_an_alias():
    """`vgg` names the seed's architecture; `baseline` (its older name) builds the same model,
    is recorded as `vgg`, and a run recorded as `baseline` compares equal to one as `vgg`."""
    from cifarlens.training.config import TrainConfig, config_diff, learned_settings, make_config
    from cifarlens.training.models import (
        MODELS,
        canonical_model_name,
        check_model_name,
        model_source,
    )

    assert "vgg" in MODELS and "baseline" not in MODELS
    assert TrainConfig().model == "vgg"
    check_model_name("baseline")
    a, b = build_model("baseline", 100), build_model("vgg", 100)
    assert type(a) is type(b)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert complexity(a)["params"] == 10_462_756
    assert make_config("paper", model="baseline").model == "vgg"
    assert model_source("baseline") == model_source("vgg")
    assert canonical_model_name("small") == "small" and canonical_model_name(3) == 3
    old = {**dataclasses.asdict(TrainConfig()), "model": "baseline"}  # an older run's config.json
    assert learned_settings(old)["model"] == "vgg"
    assert config_diff(old, dataclasses.asdict(make_config("paper"))) == []
    assert config_diff(old, dataclasses.asdict(make_config("paper", model="small"))) == \
        [("model", "vgg", "small")]


def test_replication_check_accepts_either_name_of_the_seed_model():
    from summaries import make_summary

    from cifarlens.report.first_screen import replication_why_not as replication_applies
    from cifarlens.study.schema import summary_from_json

    def why(model: str) -> list[str]:
        s = make_summary()
        s.update(data_source="official", config={**s["config"], "model": model})
        return replication_applies(summary_from_json(s))

    assert why("baseline") == why("vgg")
    assert not any("model" in w for w in why("vgg"))
    assert any("model" in w for w in why("resnet18"))
