"""Accuracy under the common corruptions: a model's accuracy on every corruption and severity
(computed locally, or read from the published CIFAR-10-C / CIFAR-100-C files), and the corruption
error arithmetic of Hendrycks & Dietterich (2019).

Arrays in, dicts out: `corruption_accuracy` takes a model and uint8 test images and returns a
JSON-ready dict plus per-image correctness; writing files and drawing figures are elsewhere.

Corruption error (CE) of a corruption is its mean error over the severities run; the mean CE
(mCE) is the mean over the 15 main corruptions; the relative CE is the mean over severities of
(error - clean error), the degradation from clean. ImageNet-C normalises each CE by AlexNet's;
no AlexNet errors exist for these images, so `normalised_mce` uses the baseline arm instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlens.analysis.corruptions import (
    ALL,
    CORRUPTIONS,
    FAMILIES,
    HELD_OUT,
    REFERENCE,
    SEVERITIES,
    SOURCE_NOTE,
    corrupt,
)
from cifarlens.analysis.power import decide
from cifarlens.analysis.stats import holm, paired_seed_test
from cifarlens.data.split import stratified_subset
from cifarlens.errors import CifarlensError

# A model's predicted classes for a batch of uint8 NCHW images on the evaluation device (the
# stage that calls `corruption_accuracy` normalises and runs the model; this module never does).
Predict = Callable[[torch.Tensor], np.ndarray | torch.Tensor]

# On a CPU: the 15 corruptions at all 5 severities on a class-balanced 500-image subset of the
# test set (5 per CIFAR-100 class): 38,000 forward passes, ~15% of a quick-preset model's time on
# the 2-core CPU (docs/robustness.md, "Cost"; 1,000 images would be ~31%). On a GPU: every test
# image, and the 4 held out too.
CPU_IMAGES = 500
SUBSET_SEED = 0  # one subset for every run, so arms and seeds are compared on the same images

# MD5 of each file of the published sets (Zenodo records 2535967 and 3555552), as
# ENSTA-U2IS-AI/torch-uncertainty lists them (torch_uncertainty/datasets/classification/cifar/
# cifar_c.py); a folder whose files all match is recorded as the published set.
PUBLISHED_MD5: dict[str, dict[str, str]] = {
    "CIFAR-10-C (Zenodo 2535967)": {
        "brightness": "0a81ef75e0b523c3383219c330a85d48",
        "contrast": "3c8262171c51307f916c30a3308235a8",
        "defocus_blur": "7d1322666342a0702b1957e92f6254bc",
        "elastic_transform": "9421657c6cd452429cf6ce96cc412b5f",
        "fog": "7b397314b5670f825465fbcd1f6e9ccd",
        "frost": "31f6ab3bce1d9934abfb0cc13656f141",
        "gaussian_blur": "c33370155bc9b055fb4a89113d3c559d",
        "gaussian_noise": "ecaf8b9a2399ffeda7680934c33405fd",
        "glass_blur": "7361fb4019269e02dbf6925f083e8629",
        "impulse_noise": "2090e01c83519ec51427e65116af6b1a",
        "jpeg_compression": "2b9cc4c864e0193bb64db8d7728f8187",
        "labels": "c439b113295ed5254878798ffe28fd54",
        "motion_blur": "fffa5f852ff7ad299cfe8a7643f090f4",
        "pixelate": "0f14f7e2db14288304e1de10df16832f",
        "saturate": "1cfae0964219c5102abbb883e538cc56",
        "shot_noise": "3a7239bb118894f013d9bf1984be7f11",
        "snow": "bb238de8555123da9c282dea23bd6e55",
        "spatter": "8a5a3903a7f8f65b59501a6093b4311e",
        "speckle_noise": "ef00b87611792b00df09c0b0237a1e30",
        "zoom_blur": "6ea8e63f1c5cdee1517533840641641b",
    },
    "CIFAR-100-C (Zenodo 3555552)": {
        "brightness": "f22d7195aecd6abb541e27fca230c171",
        "contrast": "322bb385f1d05154ee197ca16535f71e",
        "defocus_blur": "d923e3d9c585a27f0956e2f2ad832564",
        "elastic_transform": "a0792bd6581f6810878be71acedfc65a",
        "fog": "4efc7ebd5e82b028bdbe13048e3ea564",
        "frost": "3a39c6823bdfaa0bf8b12fe7004b8117",
        "gaussian_blur": "5204ba0d557839772ef5a4196a052c3e",
        "gaussian_noise": "ecc4d366eac432bdf25c024086f5e97d",
        "glass_blur": "0bf384f38e5ccbf8dd479d9059b913e1",
        "impulse_noise": "3b3c210ddfa0b5cb918ff4537a429fef",
        "jpeg_compression": "c851b7f1324e1d2ffddeb76920576d11",
        "labels": "bb4026e9ce52996b95f439544568cdb2",
        "motion_blur": "732a7e2e54152ff97c742d4c388c5516",
        "pixelate": "96c00c60f144539e14cffb02ddbd0640",
        "saturate": "c0697e9fdd646916a61e9c312c77bf6b",
        "shot_noise": "b0a1fa6e1e465a747c1b204b1914048a",
        "snow": "0237be164583af146b7b144e73b43465",
        "spatter": "12ccf41d62564d36e1f6a6ada5022728",
        "speckle_noise": "e3f215b1a0f9fd9fd6f0d1cf94a7ce99",
        "zoom_blur": "0204613400c034a81c4830d5df81cb82",
    },
}


# --- the published files --------------------------------------------------------------------------


@dataclass
class PublishedCorruptions:
    """A folder of CIFAR-C files: `<name>.npy` (5 n, 32, 32, 3) uint8, severity 1 first, and
    labels.npy (5 n,); arrays memory-mapped, every file checksummed before it was read."""

    folder: Path
    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> md5, sha256
    published_as: str | None = None  # the published set every file matches, if one does

    @property
    def per_severity(self) -> int:
        return len(self.labels) // len(SEVERITIES)

    def images(self, name: str, severity: int, indices: np.ndarray) -> np.ndarray:
        """uint8 NCHW images of `name` at `severity` for test-set `indices`."""
        rows = (severity - 1) * self.per_severity + np.asarray(indices)
        return np.ascontiguousarray(self.arrays[name][rows].transpose(0, 3, 1, 2))

    def source(self) -> str:
        if self.published_as:
            return f"the published {self.published_as} files (MD5 checked)"
        return "user-supplied files in the CIFAR-C format: checksums recorded, not the published ones"


def _digests(path: Path) -> dict[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CifarlensError(f"{path} is not a readable .npy array ({e})") from None


def read_published(folder: str | Path, names: Sequence[str]) -> PublishedCorruptions:
    """The CIFAR-C files of `names` (and labels.npy) in `folder`, checksummed, then read with
    np.load(allow_pickle=False) and checked for shape and dtype."""
    folder = Path(folder)
    files: dict[str, dict[str, str]] = {}
    arrays: dict[str, np.ndarray] = {}
    for name in ["labels", *names]:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise CifarlensError(f"{folder} has no {name}.npy (CIFAR-C files are named "
                                 f"<corruption>.npy beside labels.npy)")
        files[name] = _digests(path)
        arrays[name] = _load(path)
    labels = arrays.pop("labels")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) % len(SEVERITIES):
        raise CifarlensError(f"{folder / 'labels.npy'}: need integer labels, 5 severities x n")
    for name, a in arrays.items():
        if a.dtype != np.uint8 or a.shape[1:] != (32, 32, 3) or len(a) != len(labels):
            raise CifarlensError(f"{folder / (name + '.npy')}: need uint8 ({len(labels)}, 32, 32, "
                                 f"3) (5 severities x {len(labels) // 5} images), got "
                                 f"{a.dtype} {a.shape}")
    published_as = next((set_name for set_name, md5s in PUBLISHED_MD5.items()
                         if all(md5s.get(n) == d["md5"] for n, d in files.items())), None)
    return PublishedCorruptions(folder, arrays, np.asarray(labels), files, published_as)


# --- selection and the plan ----------------------------------------------------------------------


def balanced_subset(labels: np.ndarray, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """n test indices, class-balanced and seeded (all of them when n >= their number)."""
    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if n < k:
        raise CifarlensError(f"a class-balanced subset of {n} images cannot cover the test "
                             f"set's {k} classes: ask for at least {k}")
    return stratified_subset(labels, np.arange(len(labels)), n, seed)


@dataclass(frozen=True)
class RobustnessPlan:
    """What to evaluate: corruption names (main or held out), severities, the batch size, and
    published files to read instead of computing the corruptions."""

    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    severities: tuple[int, ...] = SEVERITIES
    batch_size: int = 500
    published: PublishedCorruptions | None = None

    def check(self) -> None:
        for name in self.corruptions:
            if name not in ALL:
                raise CifarlensError(f"unknown corruption {name!r}; choose from: {', '.join(ALL)}")
        if not self.corruptions or not self.severities:
            raise CifarlensError("no corruption or no severity to evaluate")
        if any(s not in SEVERITIES for s in self.severities):
            raise CifarlensError(f"severities must be among 1-5, got {list(self.severities)}")
        if self.batch_size < 1:
            raise CifarlensError("batch size must be at least 1")
        if self.published is not None:
            missing = [n for n in self.corruptions if n not in self.published.arrays]
            if missing:
                raise CifarlensError(f"the corruption files lack {', '.join(missing)}")

    def forward_passes(self, n_images: int) -> int:
        """Images through the model: the clean pass and every (corruption, severity)."""
        return n_images * (1 + len(self.corruptions) * len(self.severities))


def default_plan(device: torch.device | str, *, held_out: bool | None = None) -> RobustnessPlan:
    """The 15 at 5 severities; the held-out 4 as well on a GPU (or when asked)."""
    gpu = torch.device(device).type == "cuda"
    names = tuple(ALL) if (gpu if held_out is None else held_out) else tuple(CORRUPTIONS)
    return RobustnessPlan(corruptions=names)


def default_images(labels: np.ndarray, device: torch.device | str) -> np.ndarray:
    """Test indices to corrupt: all of them on a GPU, a class-balanced CPU_IMAGES on a CPU."""
    if torch.device(device).type == "cuda":
        return np.arange(len(labels))
    return balanced_subset(labels, CPU_IMAGES)


# --- the evaluation ------------------------------------------------------------------------------


def corruption_accuracy(predict: Predict, images_uint8: np.ndarray | torch.Tensor,
                        labels: np.ndarray, indices: np.ndarray, *,
                        plan: RobustnessPlan | None = None, device: str | torch.device = "cpu",
                        progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Accuracy of `predict` (uint8 NCHW batch on `device` -> predicted classes) on uint8 NCHW
    `images_uint8` (test-set `indices`, which seed each image's corruption) clean and under
    every corruption and severity of `plan`.

    `progress(n)` is called after each batch of n forward passes (see
    `RobustnessPlan.forward_passes` for the total). Returns the record (accuracies as
    fractions, keyed by severity as a string) with "per_image": the conditions and a
    (conditions, images) bool array of correctness, for paired tests.
    """
    plan = plan or RobustnessPlan()
    plan.check()
    dev = torch.device(device)
    x = torch.as_tensor(np.asarray(images_uint8))
    y = np.asarray(labels).astype(np.int64)
    idx = np.asarray(indices).astype(np.int64)
    if x.dtype != torch.uint8 or x.ndim != 4 or not len(x) == len(y) == len(idx):
        raise CifarlensError("need uint8 (N, 3, H, W) images with one label and one index each")
    if plan.published is not None:
        _check_published_labels(plan.published, y, idx)
    x = x.to(dev)

    def accuracy_of(get: Callable[[slice], torch.Tensor]) -> np.ndarray:
        correct = np.empty(len(y), dtype=bool)
        for i in range(0, len(y), plan.batch_size):
            s = slice(i, i + plan.batch_size)
            pred = predict(get(s))
            pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            correct[s] = pred == y[s]
            if progress is not None:
                progress(len(correct[s]))
        return correct

    conditions, rows = ["clean"], [accuracy_of(lambda s: x[s])]
    for name in plan.corruptions:
        for sev in plan.severities:
            if plan.published is not None:
                def get(s, name=name, sev=sev):
                    return torch.from_numpy(plan.published.images(name, sev, idx[s])).to(dev)
            else:
                def get(s, name=name, sev=sev):
                    return corrupt(x[s], name, sev, idx[s])
            conditions.append(f"{name}/{sev}")
            rows.append(accuracy_of(get))
    return _record(plan, conditions, np.stack(rows), idx)


def _check_published_labels(pub: PublishedCorruptions, labels: np.ndarray,
                            indices: np.ndarray) -> None:
    if len(indices) and indices.max() >= pub.per_severity:
        raise CifarlensError(f"the corruption files hold {pub.per_severity} images per severity; "
                             f"test index {int(indices.max())} is beyond them")
    for sev in SEVERITIES:
        if not np.array_equal(pub.labels[(sev - 1) * pub.per_severity + indices], labels):
            raise CifarlensError(f"the labels in {pub.folder / 'labels.npy'} (severity {sev}) are "
                                 "not this run's test labels: the files are of another test set")


def _record(plan: RobustnessPlan, conditions: list[str], correct: np.ndarray,
            indices: np.ndarray) -> dict[str, Any]:
    acc = {c: float(row.mean()) for c, row in zip(conditions, correct, strict=True)}

    def table(names: dict) -> dict[str, dict[str, float]]:
        return {n: {str(s): acc[f"{n}/{s}"] for s in plan.severities}
                for n in plan.corruptions if n in names}

    rec: dict[str, Any] = {
        "source": plan.published.source() if plan.published else SOURCE_NOTE,
        "reference": REFERENCE,
        "clean": acc["clean"],
        "corruptions": table(CORRUPTIONS),
        "held_out": table(HELD_OUT),
        "severities": list(plan.severities),
        "families": {n: ALL[n].family for n in plan.corruptions},
        "stand_ins": {n: ALL[n].stand_in for n in plan.corruptions
                      if ALL[n].stand_in and plan.published is None},
        "n_images": len(indices),
        "indices": indices.tolist(),
    }
    if plan.published is not None:
        rec["files"] = {"folder": str(plan.published.folder), **plan.published.files}
    rec["summary"] = corruption_errors(rec)
    rec["per_image"] = {"conditions": conditions, "correct": correct}
    return rec


# --- per-image correctness in a small file ---------------------------------------------------------


def pack_per_image(per_image: dict[str, Any]) -> dict[str, np.ndarray]:
    """Arrays for an npz: the conditions and the correctness packed 8 images to a byte."""
    correct = np.asarray(per_image["correct"], dtype=bool)
    return {"conditions": np.asarray(per_image["conditions"], dtype=str),
            "correct_bits": np.packbits(correct, axis=1),
            "n_images": np.asarray(correct.shape[1])}


def unpack_per_image(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    n = int(arrays["n_images"])
    bits = np.unpackbits(arrays["correct_bits"], axis=1, count=n).astype(bool)
    return {"conditions": [str(c) for c in arrays["conditions"]], "correct": bits}


# --- corruption error arithmetic ---------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def corruption_errors(rec: dict[str, Any]) -> dict[str, Any]:
    """Unnormalised CE and relative CE per corruption, their means over the main corruptions
    (mCE, relative mCE) and over the held-out ones, and mean accuracy per family and overall.
    Errors and accuracies are fractions; every mean is over the severities in `rec`."""
    clean_err = 1 - rec["clean"]
    tables = {**rec["corruptions"], **rec.get("held_out", {})}
    ce = {n: _mean([1 - a for a in t.values()]) for n, t in tables.items()}
    rel = {n: _mean([(1 - a) - clean_err for a in t.values()]) for n, t in tables.items()}
    main = [n for n in rec["corruptions"]]
    held = [n for n in rec.get("held_out", {})]
    acc = {n: _mean(list(t.values())) for n, t in rec["corruptions"].items()}
    return {
        "ce": ce, "relative_ce": rel,
        "mce": _mean([ce[n] for n in main]), "relative_mce": _mean([rel[n] for n in main]),
        "held_out_mce": _mean([ce[n] for n in held]),
        "family_accuracy": {f: _mean([acc[n] for n in main if ALL[n].family == f])
                            for f in FAMILIES if any(ALL[n].family == f for n in main)},
        "corruption_accuracy": _mean([acc[n] for n in main]),
    }


def normalised_mce(variant: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """ImageNet-C's mCE and relative mCE with the baseline arm's errors in AlexNet's place:
    CE_c = sum_s E_v(c, s) / sum_s E_b(c, s) and relative CE_c = sum_s (E_v(c, s) - E_v(clean))
    / sum_s (E_b(c, s) - E_b(clean)), averaged over the main corruptions both records hold (as
    fractions: 1.0 is the baseline's level). A relative CE whose baseline degradation is not
    positive is left out (None), since the ratio would not mean anything."""
    names = [n for n in variant["corruptions"] if n in baseline["corruptions"]]
    if not names:
        raise CifarlensError("the two robustness records share no corruption")
    ce, rel = {}, {}
    for n in names:
        sevs = [s for s in variant["corruptions"][n] if s in baseline["corruptions"][n]]
        ev = np.array([1 - variant["corruptions"][n][s] for s in sevs])
        eb = np.array([1 - baseline["corruptions"][n][s] for s in sevs])
        ce[n] = float(ev.sum() / eb.sum()) if eb.sum() > 0 else None
        db = float((eb - (1 - baseline["clean"])).sum())
        rel[n] = float((ev - (1 - variant["clean"])).sum() / db) if db > 0 else None
    return {"normaliser": "baseline arm (AlexNet's errors are not available for these images)",
            "ce": ce, "relative_ce": rel,
            "mce": _mean([v for v in ce.values() if v is not None]),
            "relative_mce": _mean([v for v in rel.values() if v is not None])}


# --- the study: variant minus baseline across seeds ---------------------------------------------


def _same_conditions(recs: Sequence[dict[str, Any]]) -> None:
    first = recs[0]
    for r in recs[1:]:
        same = (r["indices"] == first["indices"] and r["severities"] == first["severities"]
                and list(r["corruptions"]) == list(first["corruptions"])
                and r.get("source") == first.get("source"))
        if not same:
            raise CifarlensError("robustness records to compare must share images, corruptions, "
                                 "severities and source: rerun `cifarlens robustness` alike")


def compare_arms(baseline: Sequence[dict[str, Any]], variant: Sequence[dict[str, Any]], *,
                 level: float = 0.95, alpha: float = 0.05) -> dict[str, Any]:
    """Variant minus baseline in accuracy under corruption, paired by seed (baseline[i] and
    variant[i] share seed i): per family and overall (mean over the main corruptions and the
    severities run), each with the paired t-test across seeds and its `level` t interval
    (`stats.paired_seed_test`), the families Holm-adjusted as one family of four tests, and a
    verdict by `power.decide` on the per-seed differences with that Holm p ("helped" = more
    robust), the rule every change's verdict follows. Also each arm's mean mCE and
    the variant's relative mCE with the baseline arm as normaliser, per seed and on average.

    The noise these tests cover is the seeds' (training randomness); test-image sampling is
    part of it only as far as it varies between seeds, since every run sees the same images."""
    def verdict(b: list[float], v: list[float], p_adj: float | None) -> str:
        diffs = [y - x for x, y in zip(b, v, strict=True)]
        return decide(diffs, alpha=alpha, p_adjusted=p_adj).decision

    if len(baseline) != len(variant) or not baseline:
        raise CifarlensError(f"need one robustness record per seed in each arm, paired: got "
                             f"{len(baseline)} baseline and {len(variant)} variant")
    _same_conditions([*baseline, *variant])
    sb = [corruption_errors(r) for r in baseline]
    sv = [corruption_errors(r) for r in variant]
    families = [f for f in FAMILIES if f in sb[0]["family_accuracy"]]
    tests = {f: paired_seed_test([s["family_accuracy"][f] for s in sb],
                                 [s["family_accuracy"][f] for s in sv], level)
             for f in families}
    for f, p_adj in zip(families, holm([tests[f]["p_value"] for f in families]), strict=True):
        tests[f].update(p_holm=p_adj, verdict=verdict([s["family_accuracy"][f] for s in sb],
                                                      [s["family_accuracy"][f] for s in sv], p_adj))
    overall = paired_seed_test([s["corruption_accuracy"] for s in sb],
                               [s["corruption_accuracy"] for s in sv], level)
    overall["verdict"] = verdict([s["corruption_accuracy"] for s in sb],
                                 [s["corruption_accuracy"] for s in sv], None)
    norm = [normalised_mce(v, b) for v, b in zip(variant, baseline, strict=True)]
    return {
        "families": tests, "overall": overall, "alpha": alpha, "level": level,
        "n_seeds": len(baseline), "n_images": baseline[0]["n_images"],
        "mce": {"baseline": _mean([s["mce"] for s in sb]), "variant": _mean([s["mce"] for s in sv])},
        "relative_mce_normalised": {
            "per_seed": [m["relative_mce"] for m in norm],
            "mean": _mean([m["relative_mce"] for m in norm if m["relative_mce"] is not None]),
            "mce_per_seed": [m["mce"] for m in norm],
            "mce_mean": _mean([m["mce"] for m in norm if m["mce"] is not None]),
            "normaliser": norm[0]["normaliser"]},
        "source": baseline[0].get("source"),
    }
