"""Training-set label issues from out-of-sample val probabilities, and the flips that score them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cifarlens.analysis import label_issues as LI
from cifarlens.data.synth import confusable_classes
from cifarlens.data.synth_flips import flip_labels
from cifarlens.errors import CifarlensError
from cifarlens.stages.label_issues import val_set


def _probs(pred: list[int], k: int = 3, p: float = 0.9) -> np.ndarray:
    out = np.full((len(pred), k), (1 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_coverage_votes_and_ranking_arithmetic(monkeypatch):
    # the merge alone: a flag wherever the top class is not the given label
    monkeypatch.setattr(LI, "cleanlab_flags", lambda y, p, **_: p.argmax(1) != y)
    a = {"indices": np.array([0, 1, 2, 3]), "labels": np.array([0, 1, 0, 1]),
         "probs": _probs([0, 2, 0, 0], p=0.9)}
    b = {"indices": np.array([3, 4, 5]), "labels": np.array([1, 2, 2]),
         "probs": _probs([1, 2, 0], p=0.6)}
    r = LI.find_issues([a, b], n_train=10)
    assert r["coverage"] == pytest.approx(0.6) and r["n_covered"] == 6
    np.testing.assert_array_equal(r["covered"], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(r["covering"], [1, 1, 1, 2, 1, 1])
    np.testing.assert_array_equal(r["votes"], [0, 1, 0, 1, 0, 1])
    # image 3: P(label 1) = 0.05 in run a and 0.6 in run b -> mean 0.325
    np.testing.assert_allclose(r["self_confidence"][3], (0.05 + 0.6) / 2)
    # flagged by 1 of 2 covering runs counts at min_share 0.5; ranked by self-confidence
    np.testing.assert_array_equal(r["index"], [1, 5, 3])
    np.testing.assert_allclose(r["rank_self_confidence"], [0.05, 0.2, 0.325])
    np.testing.assert_array_equal(r["rank_suggested"], [2, 0, 0])  # 3: mean (.55, .325, .125)
    assert r["per_run"] == [{"n": 4, "flagged": 2}, {"n": 3, "flagged": 1}]
    strict = LI.find_issues([a, b], n_train=10, min_share=0.75)
    np.testing.assert_array_equal(strict["index"], [1, 5])


def test_runs_that_disagree_or_point_outside_the_training_set_are_refused():
    a = {"indices": np.array([0, 1]), "labels": np.array([0, 1]), "probs": _probs([0, 1])}
    b = {"indices": np.array([1, 2]), "labels": np.array([2, 1]), "probs": _probs([0, 1])}
    with pytest.raises(CifarlensError, match="other labels"):
        LI.find_issues([a, b], n_train=5)
    with pytest.raises(CifarlensError, match="below 2"):
        LI.find_issues([b], n_train=2)
    with pytest.raises(CifarlensError, match="probabilities"):
        LI.find_issues([{**a, "probs": _probs([0])}], n_train=5)


def test_cleanlab_flags_confident_disagreement_in_each_run_and_the_merge_keeps_them():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    pred = y.copy()
    planted = np.array([5, 50, 100, 110])
    pred[planted] = (y[planted] + 1) % 3
    probs = _probs(list(pred), p=0.95) + rng.uniform(0, 0.01, (len(y), 3))
    flags = LI.cleanlab_flags(y, probs)
    np.testing.assert_array_equal(np.flatnonzero(flags), planted)
    half = len(y) // 2
    idx = rng.permutation(len(y))
    sets = [{"indices": idx[s], "labels": y[idx[s]], "probs": probs[idx[s]]}
            for s in (slice(0, half), slice(half, None))]
    r = LI.find_issues(sets, n_train=len(y))
    assert sorted(r["index"].tolist()) == planted.tolist() and r["coverage"] == 1.0


@pytest.mark.parametrize("kind", ["uniform", "confusable"])
def test_flags_on_a_trained_models_val_split_find_planted_flips_above_chance(analysed_run, kind):
    """The smoke run never trained on its val images, so flipping their labels plants label
    errors exactly as flipped training images that fell into the val split would be."""
    v = val_set(analysed_run)
    rate = 0.1
    k = v["probs"].shape[1]
    noisy, rec = flip_labels(v["labels"], rate, kind, k, np.random.default_rng(1),
                             confusable_classes(k))
    flipped = np.isin(v["indices"], v["indices"][[r["index"] for r in rec]])
    half = len(noisy) // 2  # two "seeds", each with half the val split
    sets = [{"indices": v["indices"][s], "labels": noisy[s], "probs": v["probs"][s]}
            for s in (slice(0, half), slice(half, None))]
    n_train = int(v["indices"].max()) + 1
    r = LI.find_issues(sets, n_train=n_train)
    assert r["coverage"] == pytest.approx(len(noisy) / n_train)
    flagged = np.isin(v["indices"], r["index"])
    precision = (flagged & flipped).sum() / flagged.sum()
    recall = (flagged & flipped).sum() / flipped.sum()
    assert precision > 2 * rate  # chance: the flip rate
    assert recall > 1.5 * flagged.mean()  # chance: the share flagged


# --- flips in generated data ---------------------------------------------------------------------------


def _train_labels(root) -> tuple[np.ndarray, np.ndarray, dict]:
    from cifarlens.data.load import load_dataset

    d = load_dataset("cifar10", root, download=False, progress=False)
    info = json.loads((root / "cifar-10-batches-py" / "cifarlens-synth.json").read_text())
    return d.train_y, d.test_y, info


@pytest.mark.parametrize("kind", ["uniform", "confusable"])
def test_synth_training_flips_are_recorded_and_reproducible(tmp_path, kind):
    from cifarlens.cli import main
    from cifarlens.data.manifests import validate_manifest
    from cifarlens.data.synth import ensure_synthetic, write_synthetic

    kw = {"train_per_class": 20, "test_per_class": 5, "seed": 3}
    write_synthetic(tmp_path / "clean", "cifar10", **kw)
    assert main(["data", "synth", "--dataset", "cifar10", "--data-dir", str(tmp_path / "noisy"),
                 "--train-per-class", "20", "--test-per-class", "5", "--seed", "3",
                 "--train-label-noise", "0.1", "--train-noise-kind", kind]) == 0
    y0, t0, _ = _train_labels(tmp_path / "clean")
    y1, t1, info = _train_labels(tmp_path / "noisy")
    rec = info["flipped_labels"]["train"]
    assert len(rec) == 20 and info["train_label_noise"] == 0.1
    assert info["train_noise_kind"] == kind and info["flipped_labels"]["test"] == []
    np.testing.assert_array_equal(np.flatnonzero(y0 != y1), [r["index"] for r in rec])
    assert all(y0[r["index"]] == r["original"] and y1[r["index"]] == r["noisy"] for r in rec)
    np.testing.assert_array_equal(t0, t1)  # the test split does not move
    if kind == "confusable":
        partner = confusable_classes(10)
        assert all(r["noisy"] == partner[r["original"]] for r in rec)
    validate_manifest(info, "noisy")
    # the same arguments give the same bytes; ensure_synthetic keeps them, or rewrites on change
    archive = tmp_path / "noisy" / "cifar-10-python.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    write_synthetic(tmp_path / "again", "cifar10", **kw, train_noise=(0.1, kind))
    again = tmp_path / "again" / "cifar-10-python.tar.gz"
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest
    mtime = archive.stat().st_mtime_ns
    ensure_synthetic(tmp_path / "noisy", "cifar10", **kw, train_noise=(0.1, kind))
    assert archive.stat().st_mtime_ns == mtime
    ensure_synthetic(tmp_path / "noisy", "cifar10", **kw)  # no flips asked for: rewritten
    assert _train_labels(tmp_path / "noisy")[2]["flipped_labels"]["train"] == []


def test_bad_training_noise_settings_are_one_line_errors(tmp_path):
    from cifarlens.data.manifests import validate_manifest
    from cifarlens.data.synth import write_synthetic

    with pytest.raises(CifarlensError, match="from 0 to 1"):
        write_synthetic(tmp_path, "cifar10", train_per_class=2, test_per_class=1,
                        train_noise=(1.5, "uniform"))
    with pytest.raises(CifarlensError, match="unknown label noise kind"):
        flip_labels(np.zeros(4, int), 0.5, "superclass", 10, np.random.default_rng(0))
    with pytest.raises(CifarlensError, match="partner"):
        flip_labels(np.zeros(4, int), 0.5, "confusable", 10, np.random.default_rng(0))
    folder = write_synthetic(tmp_path, "cifar10", train_per_class=2, test_per_class=1)
    info = json.loads((folder / "cifarlens-synth.json").read_text())
    with pytest.raises(CifarlensError, match="bad manifest x: unknown label noise kind"):
        validate_manifest({**info, "train_label_noise": 0.1, "train_noise_kind": "odd"}, "x")
