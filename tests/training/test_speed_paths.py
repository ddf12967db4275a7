"""The device-agnostic parts of the fast path, checked on the CPU: precision and compile choices,
channels_last batches, and the compile probe's timing logic (no GPU needed for any of it)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.training import loop as T
from cifarlens.training import runtime as R
from cifarlens.training.batches import Batches
from cifarlens.training.config import make_config
from cifarlens.training.loop import _CompileProbe, _make_step, time, train
from cifarlens.training.runtime import (
    COMPILE_COST_S,
    COMPILE_MAX_SHARE,
    Dist,
    cpu_has_bf16,
    graph_model,
    resolve_compile,
    resolve_graphs,
    resolve_precision,
)

CPU = torch.device("cpu")


def test_precision_auto_follows_the_cpu_and_explicit_choices_win(monkeypatch):
    monkeypatch.setattr(R, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(R, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    for name in ("fp32", "bf16"):
        assert resolve_precision(name, CPU) == name


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has neither avx512_bf16 nor amx_bf16")
def test_this_cpu_gets_bf16():
    # The development machine (AMD EPYC Zen 4, avx512_bf16) must train in bf16 by default.
    assert resolve_precision("auto", CPU) == "bf16"


def test_compile_auto_is_off_on_cpu_whatever_the_run_length():
    for est in (None, 1.0, 600.0, 1e6):
        assert resolve_compile("auto", "cpu", est) is False


def test_compile_auto_on_cuda_only_when_compile_time_is_a_small_share():
    threshold = COMPILE_COST_S / COMPILE_MAX_SHARE  # 500 s with the defaults
    assert resolve_compile("auto", "cuda", None) is False  # not timed yet
    assert resolve_compile("auto", "cuda", 60.0) is False  # paper preset on an H200
    assert resolve_compile("auto", "cuda", threshold * 0.99) is False
    assert resolve_compile("auto", "cuda", threshold) is True
    assert resolve_compile("auto", "cuda", 3600.0) is True


def test_compile_on_and_off_are_forced():
    for dev in ("cpu", "cuda"):
        for est in (None, 1.0, 1e6):
            assert resolve_compile("on", dev, est) is True
            assert resolve_compile("off", dev, est) is False
    with pytest.raises(CifarlensError, match="--compile"):
        resolve_compile("yes", "cuda", 1e6)
    assert resolve_compile("graphs", "cuda", 1e6) is False  # graphs are not torch.compile


# --- CUDA graphs (--compile graphs / auto on one GPU) ----------------------------------------------


def test_graphs_decision():
    assert resolve_graphs("auto", "cuda", 1) is True  # what the GPU suite's headline measures
    assert resolve_graphs("auto", "cuda", 2) is False  # DDP: eager (+ the compile probe)
    assert resolve_graphs("auto", "cpu", 1) is False  # the CPU ignores auto cleanly
    for mode in ("off", "on"):
        assert resolve_graphs(mode, "cuda", 1) is False
    assert resolve_graphs("graphs", "cuda", 1) is True
    with pytest.raises(CifarlensError, match="needs a CUDA GPU; this run is on cpu"):
        resolve_graphs("graphs", "cpu", 1)
    with pytest.raises(CifarlensError, match="one process only"):
        resolve_graphs("graphs", "cuda", 2)
    with pytest.raises(CifarlensError, match="--compile must be"):
        resolve_graphs("cudagraphs", "cuda", 1)


def test_graphs_asked_for_on_the_cpu_is_refused_before_any_work(tmp_path, capsys):

    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(tmp_path / "no-data"), "--preset", "smoke",
                   "--device", "cpu", "--compile", "graphs", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "--compile graphs needs a CUDA GPU" in err
    assert not out.exists()


def _warmup_grapher(calls: list):
    """A CPU stand-in for torch.cuda.make_graphed_callables: like it, it runs warm-up passes in
    train mode under the caller's autocast (moving BatchNorm statistics), takes gradients with
    autograd.grad (never into .grad) and returns the module."""

    def grapher(model, args):
        calls.append(torch.is_autocast_enabled("cpu"))
        for _ in range(3):
            out = model(*args)
            torch.autograd.grad(out.float().sum(), [p for p in model.parameters()])
        return model

    return grapher


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_model_changes_nothing_the_run_computes(precision):
    """graph_model restores what its warm-up moved: the graphed model's first step gives the
    same loss, gradients, BatchNorm statistics and weights as the eager model's."""
    from cifarlens.training.models import build_model

    torch.manual_seed(0)
    eager = build_model("small", 10).train()
    graphed_src = build_model("small", 10).train()
    graphed_src.load_state_dict(eager.state_dict())
    x = torch.randn(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    calls: list = []
    g = graph_model(graphed_src, x * 3 + 1, CPU, precision, grapher=_warmup_grapher(calls))
    assert calls == [precision == "bf16"]  # captured under the training precision
    for (k, a), b in zip(eager.state_dict().items(), graphed_src.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{k} moved by the warm-up"
    cfg = make_config("smoke", device="cpu")
    results = []
    for model in (eager, g):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        sums = torch.zeros(3, dtype=torch.float64)
        torch.manual_seed(1)  # the epoch seed: dropout draws alike
        _make_step(model, opt, sched, cfg, CPU, precision)(x, y, sums)
        results.append((sums.clone(), {k: v.clone() for k, v in model.state_dict().items()}))
    assert torch.equal(results[0][0], results[1][0])  # loss sum, correct, n
    for k in results[0][1]:
        assert torch.equal(results[0][1][k], results[1][1][k]), k


def test_the_stand_in_warmup_really_moves_batchnorm_statistics():
    # Guards the test above: without graph_model's restore its check would fail.
    from cifarlens.training.models import build_model

    m = build_model("small", 10).train()
    before = {k: v.clone() for k, v in m.named_buffers()}
    _warmup_grapher([])(m, (torch.randn(8, 3, 32, 32) * 3 + 1,))
    assert any(not torch.equal(before[k], v) for k, v in m.named_buffers())


def test_compile_probe_times_after_warmup_and_decides_once(monkeypatch):
    clock = itertools.count(100.0, 2.0)  # 20 timed steps in 2 s -> 0.1 s/step
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    seen = []
    monkeypatch.setattr(T, "resolve_compile", lambda mode, dev, est: seen.append(est) or True)
    probe = _CompileProbe(steps_per_epoch=312, steps_left=15_600, device=CPU, d=Dist())
    out = [probe.after_step(i) for i in range(30)]
    assert (probe.start, probe.end) == (4, 24)
    assert out[24] is True and all(o is None for k, o in enumerate(out) if k != 24)
    assert seen == [pytest.approx(0.1 * 15_600)] and probe.est_s == pytest.approx(1560.0)


@pytest.mark.parametrize("steps", [1, 2])
def test_compile_probe_stays_eager_when_an_epoch_is_too_short_to_time(steps):
    probe = _CompileProbe(steps_per_epoch=steps, steps_left=steps * 5, device=CPU, d=Dist())
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
    from cifarlens.training.models import build_model

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



# --- the benchmark scripts still run against the current train.py (tiny settings) ---------------

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import roofline
    import train_throughput

    return train_throughput, roofline


def test_train_throughput_bench_runs_and_reports_ratios(bench_modules, tmp_path):
    tt, _ = bench_modules
    out = tmp_path / "tt.json"
    threads = torch.get_num_threads()
    rc = tt.main(["--model", "small", "--steps", "1", "--rounds", "2", "--warmup", "1",
                  "--images", "300", "--workers", "0", "--data-steps", "2", "--device", "cpu",
                  "--contenders", "ours,ref,ours-fp32-nocl-1t", "--json", str(out)])
    assert rc == 0 and torch.get_num_threads() == threads  # per-contender threads restored
    r = json.loads(out.read_text())
    c = r["contenders"]
    assert set(c) == {"ours", "ref", "ours-fp32-nocl-1t"} and r["failed"] == {}
    assert len(c["ours"]["rounds_img_s"]) == 2 and c["ours"]["median_img_s"] > 0
    assert len(c["ours"]["ratio_vs_ref_per_round"]) == 2
    assert "channels_last" in c["ours"]["description"]  # train.py's CPU layout
    assert "fp32, contiguous, step mode eager, 1 thread" in c["ours-fp32-nocl-1t"]["description"]
    assert c["ours"]["step_mode"] == "eager"  # what --compile auto trains with on the CPU
    assert 0 < c["ours"]["data_share_of_step"] < 1


def test_train_throughput_variant_names(bench_modules):
    tt, _ = bench_modules
    assert tt.parse_variant("ours-compile-ro-1t") == {"ref": False, "compile": "reduce-overhead",
                                                      "threads": 1}
    assert tt.parse_variant("ours-graphs") == {"ref": False, "step_mode": "graphs"}
    assert tt.parse_variant("ours-det-eager") == {"ref": False, "deterministic": True,
                                                  "step_mode": "eager"}
    for bad in ("theirs", "ref-fp32", "ours-fast", "ref-graphs"):
        with pytest.raises(ValueError):
            tt.parse_variant(bad)


def test_roofline_bench_counts_three_forward_passes(bench_modules, tmp_path):
    _, rl = bench_modules
    out = tmp_path / "rl.json"
    assert rl.main(["--device", "cpu", "--rounds", "1", "--n", "128", "--reps", "1",
                    "--train-steps", "0", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["forward_flops_per_image"] == 650_612_736  # the seed report's 0.65 GFLOPs
    assert r["train_flops_per_image"] == 3 * 650_612_736
    assert r["matmul_gflops"]["bf16"]["median"] > 0


def test_graphs_path_of_train_resumes_exactly_and_equals_eager(synth10, tmp_path, monkeypatch):
    """train()'s CUDA-graph path, run on the CPU with the warm-up stand-in: graphing at the start
    of every process (fresh or resumed) changes nothing, so an interrupted and resumed graphs run
    equals an uninterrupted one and the eager run, bit for bit (on CUDA: up to floating-point
    reordering, docs/benchmarks.md)."""
    from cifarlens.runs import epoch_checkpoints, load_checkpoint

    cfg = make_config("smoke", data_dir=str(synth10), dataset="cifar10", device="cpu",
                        precision="fp32", epochs=3, batch_size=50, train_limit=200)
    quiet = lambda m: None  # noqa: E731
    train(cfg, tmp_path / "eager", progress=False, log=quiet)
    real = graph_model
    calls = []
    monkeypatch.setattr(T, "resolve_graphs", lambda mode, dev, world=1: True)
    monkeypatch.setattr(T, "graph_model", lambda m, x, dev, prec: real(
        m, x, dev, prec, grapher=_warmup_grapher(calls)))
    done = train(cfg, tmp_path / "graphs", progress=False, log=quiet)
    assert done["step_mode"] == "graphs" and len(calls) == 1

    def stop_after_epoch_2(msg):
        if msg.startswith("epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", progress=False, log=stop_after_epoch_2)
    train(cfg, tmp_path / "part", resume=True, progress=False, log=quiet)
    assert len(calls) == 3  # graphed again by the resumed process
    ref = load_checkpoint(epoch_checkpoints(tmp_path / "eager")[0])
    for run in ("graphs", "part"):
        ck = load_checkpoint(epoch_checkpoints(tmp_path / run)[0])
        assert ck["epoch"] == 3
        for k in ref["model"]:
            assert torch.equal(ref["model"][k], ck["model"][k]), (run, k)
