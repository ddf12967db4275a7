"""Results on stdout, logs and progress on stderr; predictions also as CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
from summaries import summary_json

from cifarlens.cli import main
from cifarlens.cli.study import _time_line
from cifarlens.runs import read_config
from cifarlens.study.schema import summary_from_json


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_train_prints_only_its_result_on_stdout(synth100, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "smoke", "--epochs", "1", "--data-dir", str(synth100),
                   "--device", "cpu", "--out", str(out), "--no-progress",
                   "--momentum", "0.8", "--warmup-epochs", "0"])
    cap = capsys.readouterr()
    assert rc == 0
    assert _lines(cap.out) == [line for line in _lines(cap.out) if line.startswith("done: ")]
    assert len(_lines(cap.out)) == 1 and str(out) in cap.out
    # the logs went to stderr: the model's current name, the estimate and the epoch line
    assert "training small on cifar100" in cap.err and "epoch 1/1:" in cap.err
    # the flags reached the recorded config
    cfg = read_config(out)["config"]
    assert (cfg["momentum"], cfg["warmup_epochs"], cfg["epochs"]) == (0.8, 0.0, 1)


def test_evaluate_and_failures_print_only_results_and_write_predictions_csv(run_copy, capsys):
    rc = main(["evaluate", str(run_copy), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0
    assert _lines(cap.out) == [f"wrote predictions, metrics and figures to {run_copy}"]
    assert "val: top-1" in cap.err and "test: top-1" in cap.err  # the numbers, as logs
    names = read_config(run_copy)["class_names"]
    for split in ("val", "test"):
        p = np.load(run_copy / f"predictions_{split}.npz")
        rows = list(csv.reader(io.StringIO((run_copy / f"predictions_{split}.csv").read_text())))
        assert rows[0] == ["index", "true", "pred", "confidence", "true_name", "pred_name"]
        body = rows[1:]
        assert len(body) == len(p["labels"]) > 0
        assert [int(r[0]) for r in body] == p["indices"].tolist()
        assert [int(r[1]) for r in body] == p["labels"].tolist()
        assert [int(r[2]) for r in body] == p["pred"].tolist()
        np.testing.assert_allclose([float(r[3]) for r in body], p["confidence"], atol=1e-6)
        assert [r[4] for r in body] == [names[t] for t in p["labels"]]
        assert [r[5] for r in body] == [names[k] for k in p["pred"]]
    assert not list(run_copy.glob("*.tmp*")) and not list(run_copy.glob(".*tmp*"))

    rc = main(["failures", str(run_copy), "--top", "4", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0 and len(_lines(cap.out)) == 1 and cap.out.startswith("wrote ")
    assert "wrong of" in cap.err


def test_explain_prepares_what_it_needs_and_prints_only_its_result(run_copy, capsys):
    """`cifarlens explain` on a run never evaluated: the CLI evaluates and finds the failures
    first (the stage itself never runs another), logs go to stderr, one result line to stdout."""
    rc = main(["explain", str(run_copy), "--failures", "2", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0
    assert _lines(cap.out) == [f"wrote {run_copy / 'explanations_test.npz'} (2 images)"]
    assert "test: top-1" in cap.err and "wrong of" in cap.err and "explained 2" in cap.err
    for name in ("predictions_test.npz", "failures_test.json", "explanations_test.npz"):
        assert (run_copy / name).is_file()


def test_predictions_csv_quotes_names_that_hold_separators():
    from cifarlens.stages.evaluate import predictions_csv

    p = {"indices": np.array([7, 3]), "labels": np.array([0, 1]), "pred": np.array([1, 1]),
         "confidence": np.array([0.5, 0.25], dtype=np.float32)}
    text = predictions_csv(p, ['a,b', 'say "hi"\nthere'])
    rows = list(csv.reader(io.StringIO(text)))
    # the one CSV writer (csvfile.py) makes line breaks spaces, as in the report's tables
    assert rows[1] == ["7", "0", "1", "0.500000", "a,b", 'say "hi" there']
    assert rows[2] == ["3", "1", "1", "0.250000", 'say "hi" there', 'say "hi" there']


def test_evaluate_progress_counts_images_then_figures(run_copy, monkeypatch):
    """With the delay at 0 the bar shows; it advances once per image, then once per figure."""
    from cifarlens.stages import evaluate as E

    seen: list[tuple[str, int, int]] = []
    real = E._progress

    def spy(total, desc, enabled, unit="step"):
        bar = real(total, desc, enabled, unit, delay=0.0)
        orig_close = bar.close

        def close():
            seen.append((desc, total, bar.n))
            orig_close()

        bar.close = close
        return bar

    monkeypatch.setattr(E, "_progress", spy)
    E.evaluate(run_copy, ("val", "test"), device="cpu", log=lambda m: None, progress=True)
    n = sum(len(np.load(run_copy / f"predictions_{s}.npz")["labels"]) for s in ("val", "test"))
    assert seen[0] == ("predicting", n, n)
    assert seen[1][0] == "figures" and seen[1][1] == seen[1][2] == 2 * 4  # CIFAR-100: 4 each


def test_the_result_says_what_this_invocation_measured():
    """The study and the demo end with their own measured time (the README's table is one
    machine's), with the share outside training; nothing when no time was recorded."""
    def line(timing, **env):
        return _time_line(summary_from_json(summary_json(timing=timing, environment=env)))

    cpu = {"device": "cpu", "device_name": "x86_64", "cpu_model": "Intel Xeon", "threads": 1}
    assert line({"total_s": 84.0, "train_s": 48.0, "evaluate_s": 20.0}, **cpu) == (
        "time: 84 s in all, 48 s training (43% outside training), on Intel Xeon with 1 thread")
    # --jobs: stages overlap, no split
    assert line({"total_s": 7200.0, "train_s": None}, device="cuda:0", gpu_model="NVIDIA H200",
                threads=2) == "time: 2.0 h in all, on NVIDIA H200 with 2 threads"
    assert line({}) is None and line(None) is None
