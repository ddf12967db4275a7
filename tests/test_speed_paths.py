"""The device-agnostic parts of the fast path, checked on the CPU: precision and compile choices,
channels_last batches, and the compile probe's timing logic (no GPU needed for any of it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cifarlens import train as T
from cifarlens.data import Batches
from cifarlens.errors import CifarlensError

CPU = torch.device("cpu")


def test_precision_auto_follows_the_cpu_and_explicit_choices_win(monkeypatch):
    monkeypatch.setattr(T, "cpu_has_bf16", lambda: True)
    assert T.resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(T, "cpu_has_bf16", lambda: False)
    assert T.resolve_precision("auto", CPU) == "fp32"
    for name in ("fp32", "bf16"):
        assert T.resolve_precision(name, CPU) == name


@pytest.mark.skipif(not T.cpu_has_bf16(), reason="this CPU has neither avx512_bf16 nor amx_bf16")
def test_this_cpu_gets_bf16():
    # The development machine (AMD EPYC Zen 4, avx512_bf16) must train in bf16 by default.
    assert T.resolve_precision("auto", CPU) == "bf16"


def test_compile_auto_is_off_on_cpu_whatever_the_run_length():
    for est in (None, 1.0, 600.0, 1e6):
        assert T.resolve_compile("auto", "cpu", est) is False


def test_compile_auto_on_cuda_only_when_compile_time_is_a_small_share():
    threshold = T.COMPILE_COST_S / T.COMPILE_MAX_SHARE  # 500 s with the defaults
    assert T.resolve_compile("auto", "cuda", None) is False  # not timed yet
    assert T.resolve_compile("auto", "cuda", 60.0) is False  # paper preset on an H200
    assert T.resolve_compile("auto", "cuda", threshold * 0.99) is False
    assert T.resolve_compile("auto", "cuda", threshold) is True
    assert T.resolve_compile("auto", "cuda", 3600.0) is True


def test_compile_on_and_off_are_forced():
    for dev in ("cpu", "cuda"):
        for est in (None, 1.0, 1e6):
            assert T.resolve_compile("on", dev, est) is True
            assert T.resolve_compile("off", dev, est) is False
    with pytest.raises(CifarlensError, match="--compile"):
        T.resolve_compile("yes", "cuda", 1e6)


def test_compile_probe_times_after_warmup_and_decides_once(monkeypatch):
    clock = itertools.count(100.0, 2.0)  # 20 timed steps in 2 s -> 0.1 s/step
    monkeypatch.setattr(T.time, "perf_counter", lambda: next(clock))
    seen = []
    monkeypatch.setattr(T, "resolve_compile", lambda mode, dev, est: seen.append(est) or True)
    probe = T._CompileProbe(steps_per_epoch=312, steps_left=15_600, device=CPU, d=T.Dist())
    out = [probe.after_step(i) for i in range(30)]
    assert (probe.start, probe.end) == (4, 24)
    assert out[24] is True and all(o is None for k, o in enumerate(out) if k != 24)
    assert seen == [pytest.approx(0.1 * 15_600)] and probe.est_s == pytest.approx(1560.0)


@pytest.mark.parametrize("steps", [1, 2])
def test_compile_probe_stays_eager_when_an_epoch_is_too_short_to_time(steps):
    probe = T._CompileProbe(steps_per_epoch=steps, steps_left=steps * 5, device=CPU, d=T.Dist())
    decisions = [probe.after_step(i) for i in range(steps)]
    assert False in decisions and True not in decisions


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_channels_last_batches_equal_contiguous_ones(augment):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 100, 70)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.24, 0.26]
    kw = dict(device=CPU, augment=augment, seed=3)
    a = list(Batches(x, y, 32, mean, std, channels_last=False, **kw).epoch(2))
    b = list(Batches(x, y, 32, mean, std, channels_last=True, **kw).epoch(2))
    assert len(a) == len(b) == 2
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert not xa.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_channels_last_model_step_matches_contiguous_one():
    # The CUDA path runs model and batches in channels_last: same math as the contiguous layout.
    from cifarlens.models import build_model

    torch.manual_seed(0)
    m1 = build_model("small", 10).eval()
    m2 = build_model("small", 10).eval()
    m2.load_state_dict(m1.state_dict())
    m2 = m2.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        a = m1(x)
        b = m2(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

