"""Accuracy under corruption: the bookkeeping on a model whose answers are known, the severity
ordering on a trained model, the published-file reader on files made in that format, and the
CE / mCE arithmetic on constructed numbers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cifarlens.analysis import corruptions as C
from cifarlens.analysis import robustness as R
from cifarlens.errors import CifarlensError
from cifarlens.training.runtime import infer_logits


def pixel_reader(x: torch.Tensor) -> torch.Tensor:
    """Predicts the class equal to the image's top-left red value (0-255): its accuracy under a
    corruption is the share of images whose pixel the corruption left alone."""
    return x[:, 0, 0, 0].long()


def _pixel_data(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = images[:, 0, 0, 0].astype(np.int64)
    return images, labels, np.arange(1000, 1000 + n)


def test_accuracy_bookkeeping_on_a_model_with_known_answers():
    images, labels, idx = _pixel_data()
    plan = R.RobustnessPlan(corruptions=("contrast", "impulse_noise", "saturate"),
                            severities=(1, 5), batch_size=16)
    seen = []
    rec = R.corruption_accuracy(pixel_reader, images, labels, idx, plan=plan,
                                progress=seen.append)
    assert rec["clean"] == 1.0
    assert sum(seen) == plan.forward_passes(len(images)) == 40 * 7
    for name in plan.corruptions:
        for s in plan.severities:
            kept = C.corrupt(images, name, s, idx)[:, 0, 0, 0].numpy() == labels
            table = rec["held_out"] if name in C.HELD_OUT else rec["corruptions"]
            assert table[name][str(s)] == pytest.approx(kept.mean())
            row = rec["per_image"]["conditions"].index(f"{name}/{s}")
            np.testing.assert_array_equal(rec["per_image"]["correct"][row], kept)
    assert set(rec["corruptions"]) == {"contrast", "impulse_noise"}
    assert set(rec["held_out"]) == {"saturate"}
    assert rec["indices"] == idx.tolist() and rec["n_images"] == 40
    assert rec["source"] == "corruptions computed locally, not the published CIFAR-100-C files"
    assert rec["families"] == {"contrast": "digital", "impulse_noise": "noise",
                               "saturate": "digital"}


def test_the_same_images_give_the_same_record_in_other_batches():
    images, labels, idx = _pixel_data(30)
    plan = R.RobustnessPlan(corruptions=("gaussian_noise",), severities=(2,), batch_size=7)
    a = R.corruption_accuracy(pixel_reader, images, labels, idx, plan=plan)
    perm = np.random.default_rng(1).permutation(30)
    b = R.corruption_accuracy(pixel_reader, images[perm], labels[perm], idx[perm],
                              plan=R.RobustnessPlan(corruptions=("gaussian_noise",),
                                                    severities=(2,), batch_size=30))
    assert a["corruptions"] == b["corruptions"]


def test_accuracy_falls_with_severity_on_a_trained_model(smoke_run):
    from cifarlens.runs import Run

    run = Run(smoke_run)
    x, y, idx = run.split_arrays("test")
    keep = R.balanced_subset(y, 500)
    x, y, idx = x[keep], y[keep], idx[keep]
    names = ("gaussian_noise", "defocus_blur", "fog", "contrast", "pixelate")
    plan = R.RobustnessPlan(corruptions=names, severities=(1, 3, 5), batch_size=500)
    model = run.model()

    def predict(xb):
        return infer_logits(model, xb, run.norm["mean"], run.norm["std"],
                            device=torch.device("cpu")).argmax(1)

    rec = R.corruption_accuracy(predict, x, y, idx, plan=plan)
    mean_by_sev = [np.mean([rec["corruptions"][n][str(s)] for n in names]) for s in (1, 3, 5)]
    assert rec["clean"] > 0.3  # the smoke model has learnt the generated classes
    assert rec["clean"] >= mean_by_sev[0] > mean_by_sev[1] > mean_by_sev[2]
    assert rec["summary"]["relative_mce"] > 0


def test_balanced_subset_is_balanced_seeded_and_refuses_too_few():
    labels = np.repeat(np.arange(10), 30)
    sub = R.balanced_subset(labels, 50)
    assert len(sub) == 50 and np.bincount(labels[sub]).tolist() == [5] * 10
    assert np.array_equal(sub, R.balanced_subset(labels, 50))
    assert not np.array_equal(sub, R.balanced_subset(labels, 50, seed=1))
    with pytest.raises(CifarlensError, match="cannot cover"):
        R.balanced_subset(labels, 9)
    assert len(R.default_images(labels, "cpu")) == min(R.CPU_IMAGES, 300)


def test_default_plan_adds_the_held_out_four_on_a_gpu():
    assert R.default_plan("cpu").corruptions == tuple(C.CORRUPTIONS)
    assert R.default_plan("cuda").corruptions == tuple(C.ALL)
    assert R.default_plan("cpu", held_out=True).corruptions == tuple(C.ALL)


@pytest.mark.parametrize("bad, match", [
    (dict(corruptions=("rain",)), "unknown corruption"),
    (dict(severities=(0,)), "severities"),
    (dict(severities=()), "no corruption"),
    (dict(batch_size=0), "batch size"),
])
def test_bad_plans_are_refused(bad, match):
    images, labels, idx = _pixel_data(4)
    with pytest.raises(CifarlensError, match=match):
        R.corruption_accuracy(pixel_reader, images, labels, idx,
                              plan=R.RobustnessPlan(**bad))


# --- the published files' format -------------------------------------------------------------------


def _write_cifar_c(folder, images, labels, names):
    """Files as make_cifar_c.py saves them: severity 1's images first, NHWC uint8."""
    n = len(images)
    for name in names:
        stack = [C.corrupt(images, name, s, np.arange(n)).numpy() for s in C.SEVERITIES]
        np.save(folder / f"{name}.npy", np.concatenate(stack).transpose(0, 2, 3, 1))
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))


def test_published_files_give_the_local_accuracy(tmp_path):
    images, labels, _ = _pixel_data(20)
    idx = np.arange(20)
    names = ("fog", "jpeg_compression")
    _write_cifar_c(tmp_path, images, labels, names)
    pub = R.read_published(tmp_path, names)
    assert pub.per_severity == 20 and pub.published_as is None
    with open(tmp_path / "fog.npy", "rb") as f:
        assert pub.files["fog"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    plan = dict(corruptions=names, severities=C.SEVERITIES, batch_size=8)
    local = R.corruption_accuracy(pixel_reader, images, labels, idx,
                                  plan=R.RobustnessPlan(**plan))
    read = R.corruption_accuracy(pixel_reader, images, labels, idx,
                                 plan=R.RobustnessPlan(**plan, published=pub))
    assert read["corruptions"] == local["corruptions"]
    assert read["source"].startswith("user-supplied files in the CIFAR-C format")
    assert read["files"]["labels"]["md5"] == pub.files["labels"]["md5"]
    # a subset of the test images reads the matching rows
    part = R.corruption_accuracy(pixel_reader, images[5:9], labels[5:9], idx[5:9],
                                 plan=R.RobustnessPlan(**plan, published=pub))
    rows = [read["per_image"]["conditions"].index(c) for c in part["per_image"]["conditions"]]
    np.testing.assert_array_equal(part["per_image"]["correct"],
                                  read["per_image"]["correct"][rows][:, 5:9])


def test_files_matching_the_published_checksums_are_named(tmp_path, monkeypatch):
    images, labels, _ = _pixel_data(5)
    _write_cifar_c(tmp_path, images, labels, ("contrast",))
    md5 = {n: hashlib.md5((tmp_path / f"{n}.npy").read_bytes()).hexdigest()
           for n in ("contrast", "labels")}
    monkeypatch.setitem(R.PUBLISHED_MD5, "CIFAR-100-C (Zenodo 3555552)", md5)
    pub = R.read_published(tmp_path, ("contrast",))
    assert pub.published_as == "CIFAR-100-C (Zenodo 3555552)"
    assert pub.source() == "the published CIFAR-100-C (Zenodo 3555552) files (MD5 checked)"


def test_published_reader_refuses_what_it_cannot_trust(tmp_path):
    images, labels, _ = _pixel_data(5)
    _write_cifar_c(tmp_path, images, labels, ("fog",))
    with pytest.raises(CifarlensError, match="no snow.npy"):
        R.read_published(tmp_path, ("snow",))
    np.save(tmp_path / "snow.npy", np.zeros((25, 32, 32, 3), np.float32))
    with pytest.raises(CifarlensError, match="need uint8"):
        R.read_published(tmp_path, ("snow",))
    np.save(tmp_path / "frost.npy", np.array([{"a": 1}] * 25, dtype=object), allow_pickle=True)
    with pytest.raises(CifarlensError, match="not a readable"):
        R.read_published(tmp_path, ("frost",))
    pub = R.read_published(tmp_path, ("fog",))
    with pytest.raises(CifarlensError, match="not this run's test labels"):
        R.corruption_accuracy(pixel_reader, images, (labels + 1) % 256, np.arange(5),
                              plan=R.RobustnessPlan(corruptions=("fog",), published=pub))
    with pytest.raises(CifarlensError, match="lack snow"):
        R.corruption_accuracy(pixel_reader, images, labels, np.arange(5),
                              plan=R.RobustnessPlan(corruptions=("snow",), published=pub))


# --- CE / mCE arithmetic on constructed numbers ----------------------------------------------------


def _rec(clean, tables, held=None):
    return {"clean": clean, "corruptions": tables, "held_out": held or {}}


def test_corruption_errors_by_hand():
    rec = _rec(0.9, {"gaussian_noise": {"1": 0.8, "2": 0.6},  # errors .2 .4: CE .3
                     "contrast": {"1": 0.7, "2": 0.5}},  # errors .3 .5: CE .4
               {"saturate": {"1": 0.85, "2": 0.85}})
    s = R.corruption_errors(rec)
    assert s["ce"]["gaussian_noise"] == pytest.approx(0.3)
    assert s["ce"]["contrast"] == pytest.approx(0.4)
    assert s["mce"] == pytest.approx(0.35)
    assert s["relative_ce"]["gaussian_noise"] == pytest.approx(0.2)  # 0.3 - 0.1
    assert s["relative_mce"] == pytest.approx((0.2 + 0.3) / 2)
    assert s["held_out_mce"] == pytest.approx(0.15)  # the held out stay out of the mCE
    assert s["family_accuracy"] == pytest.approx({"noise": 0.7, "digital": 0.6})
    assert s["corruption_accuracy"] == pytest.approx(0.65)


def test_normalised_mce_uses_the_baseline_in_alexnets_place():
    base = _rec(0.8, {"fog": {"1": 0.6, "2": 0.4}, "snow": {"1": 0.7, "2": 0.7}})
    var = _rec(0.9, {"fog": {"1": 0.8, "2": 0.6}, "snow": {"1": 0.7, "2": 0.5}})
    m = R.normalised_mce(var, base)
    # fog: errors .2 + .4 over .4 + .6 = 0.6; snow: .3 + .5 over .3 + .3 = 4/3
    assert m["ce"] == pytest.approx({"fog": 0.6, "snow": 4 / 3})
    assert m["mce"] == pytest.approx((0.6 + 4 / 3) / 2)
    # relative: fog (.1 + .3) / (.2 + .4) = 2/3; snow (.2 + .4) / (.1 + .1) = 3
    assert m["relative_ce"] == pytest.approx({"fog": 2 / 3, "snow": 3.0})
    assert m["relative_mce"] == pytest.approx((2 / 3 + 3) / 2)
    assert R.normalised_mce(base, base)["mce"] == pytest.approx(1.0)
    assert "AlexNet" in m["normaliser"]
    flat = _rec(0.8, {"fog": {"1": 0.8, "2": 0.8}, "snow": {"1": 0.7, "2": 0.7}})
    assert R.normalised_mce(var, flat)["relative_ce"]["fog"] is None  # no degradation to divide


def test_per_image_correctness_packs_small_and_round_trips():
    correct = np.random.default_rng(0).random((76, 500)) < 0.6
    per = {"conditions": [f"c{i}" for i in range(76)], "correct": correct}
    packed = R.pack_per_image(per)
    assert packed["correct_bits"].nbytes == 76 * 63
    back = R.unpack_per_image(packed)
    assert back["conditions"] == per["conditions"]
    np.testing.assert_array_equal(back["correct"], correct)


# --- the study's comparison, on constructed numbers ----------------------------------------------


def _seed_record(clean, fam_acc):
    """All 15 corruptions at severities 1 and 2, each corruption at its family's accuracy."""
    tables = {n: {"1": fam_acc[c.family], "2": fam_acc[c.family]}
              for n, c in C.CORRUPTIONS.items()}
    return {"clean": clean, "corruptions": tables, "held_out": {}, "severities": [1, 2],
            "indices": [0, 1, 2], "n_images": 3, "source": C.SOURCE_NOTE}


def test_compare_arms_by_hand():
    from scipy import stats as sps

    base_noise = [0.40, 0.50, 0.45]
    noise_gain = [0.05, 0.06, 0.07]  # mean 0.06, sd 0.01
    blur_jitter = [0.01, -0.01, 0.0]  # mean 0: nothing to detect
    base = [_seed_record(0.8, {"noise": n, "blur": 0.5, "weather": 0.6, "digital": 0.7})
            for n in base_noise]
    var = [_seed_record(0.8, {"noise": n + g, "blur": 0.5 + j, "weather": 0.6, "digital": 0.7})
           for n, g, j in zip(base_noise, noise_gain, blur_jitter, strict=True)]
    cmp = R.compare_arms(base, var)
    noise = cmp["families"]["noise"]
    half = sps.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert noise["mean_diff"] == pytest.approx(0.06)
    assert (noise["lo"], noise["hi"]) == pytest.approx((0.06 - half, 0.06 + half))
    p = 2 * sps.t.sf(0.06 / (0.01 / np.sqrt(3)), 2)
    assert noise["p_value"] == pytest.approx(p)
    # Holm over the four families: the smallest p is multiplied by 4; weather and digital did
    # not move at all (no variance: no test), so they count as tests that reject nothing
    assert noise["p_holm"] == pytest.approx(4 * p) and noise["verdict"] == "helped"
    assert cmp["families"]["blur"]["verdict"] == "no detectable difference"
    assert cmp["families"]["weather"]["verdict"] == "not tested"
    # overall: 3 noise + 4 blur of 15 corruptions moved
    overall = [(3 * g + 4 * j) / 15 for g, j in zip(noise_gain, blur_jitter, strict=True)]
    assert cmp["overall"]["mean_diff"] == pytest.approx(np.mean(overall))
    # relative mCE with the baseline as normaliser, seed 0 by hand: degradations from clean
    # error 0.2 summed over 2 severities, variant over baseline, averaged over the 15
    e_b = {"noise": 0.60, "blur": 0.5, "weather": 0.4, "digital": 0.3}
    e_v = {"noise": 0.55, "blur": 0.49, "weather": 0.4, "digital": 0.3}
    fams = [c.family for c in C.CORRUPTIONS.values()]
    rel0 = np.mean([(e_v[f] - 0.2) / (e_b[f] - 0.2) for f in fams])
    assert cmp["relative_mce_normalised"]["per_seed"][0] == pytest.approx(rel0)
    assert cmp["mce"]["baseline"] == pytest.approx(np.mean(
        [np.mean([e_b[f] if f != "noise" else 1 - b for f in fams]) for b in base_noise]))


def test_compare_arms_refuses_unpaired_or_unalike_records():
    rec = _seed_record(0.8, {"noise": 0.5, "blur": 0.5, "weather": 0.5, "digital": 0.5})
    with pytest.raises(CifarlensError, match="paired"):
        R.compare_arms([rec, rec], [rec])
    other = dict(rec, indices=[5, 6, 7])
    with pytest.raises(CifarlensError, match="share images"):
        R.compare_arms([rec], [other])
