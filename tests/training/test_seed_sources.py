"""Each source of randomness (split, initialisation, data order, augmentation/dropout draws) can
be drawn from its own seed (`study --vary`), and the default (every source from `seed`) trains
exactly as before."""

import numpy as np
import pytest
import torch

from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.training.batches import Batches
from cifarlens.training.config import (
    SEED_SOURCES,
    TrainConfig,
    config_diff,
    make_config,
    seed_of,
    varied_sources,
    vary_overrides,
)
from cifarlens.training.loop import train


def _cfg(data, **kw):
    base = dict(data_dir=str(data), dataset="cifar10", device="cpu", epochs=1, batch_size=50,
                train_limit=300, precision="fp32")
    base.update(kw)
    return make_config("smoke", **base)


def _train(cfg, out):
    return train(cfg, out, progress=False, log=lambda m: None)


def test_seed_of_vary_overrides_and_varied_sources():
    cfg = TrainConfig(seed=7, init_seed=3)
    assert [seed_of(cfg, s) for s in SEED_SOURCES] == [7, 3, 7, 7]
    assert vary_overrides(["init"], 5) == {"split_seed": 5, "order_seed": 5, "aug_seed": 5}
    assert vary_overrides(list(SEED_SOURCES), 5) == {}
    assert varied_sources({"split_seed": 0, "aug_seed": 0}) == ["init", "order"]
    assert varied_sources({}) == list(SEED_SOURCES)
    with pytest.raises(CifarlensError, match="--vary takes one or more of split, init"):
        vary_overrides(["init", "dropout"], 0)
    with pytest.raises(CifarlensError, match="--split-seed"):
        make_config("smoke", split_seed=-1)
    # a run recorded before these fields existed compares equal to the default
    assert config_diff({"seed": 0}, {"seed": 0, "split_seed": None}) == []
    assert config_diff({"seed": 0}, {"seed": 0, "split_seed": 0}) == [("split_seed", None, 0)]


def test_explicit_seeds_equal_to_seed_train_exactly_like_the_default(synth10, tmp_path):
    """split and init read through seed_of: naming the run's own seed changes no number."""
    a = _train(_cfg(synth10, seed=4), tmp_path / "a")
    b = _train(_cfg(synth10, seed=4, split_seed=4, init_seed=4), tmp_path / "b")
    assert a["final"]["train_loss"] == b["final"]["train_loss"]


def test_pinned_sources_make_the_seed_itself_irrelevant_and_one_source_varies_alone(
        synth10, tmp_path):
    pinned = dict(split_seed=0, init_seed=0, order_seed=0, aug_seed=0)
    r1 = _train(_cfg(synth10, seed=1, augment="crop-flip", **pinned), tmp_path / "p1")
    r2 = _train(_cfg(synth10, seed=2, augment="crop-flip", **pinned), tmp_path / "p2")
    assert r1["final"]["train_loss"] == r2["final"]["train_loss"]
    # --vary init: the split (and order, draws) held at the first seed, the weights differ
    held = vary_overrides(["init"], 0)
    i1 = _train(_cfg(synth10, seed=1, augment="crop-flip", **held), tmp_path / "i1")
    assert i1["final"]["train_loss"] != r1["final"]["train_loss"]
    s1, s2 = (Run(tmp_path / n).split_indices() for n in ("p1", "i1"))
    for k in ("train", "val", "train_used"):
        assert np.array_equal(s1[k], s2[k])
    # --vary split: another split for another seed
    sp = _train(_cfg(synth10, seed=1, **vary_overrides(["split"], 0)), tmp_path / "s1")
    assert sp  # trained
    assert not np.array_equal(Run(tmp_path / "s1").split_indices()["val"], s1["val"])


def _by_image(b: Batches, epoch: int = 0) -> tuple[list[int], dict[int, torch.Tensor]]:
    """(label order, label -> augmented image): labels 0..n-1 identify the images."""
    order, seen = [], {}
    for xb, yb in b.epoch(epoch):
        for x, y in zip(xb, yb.tolist(), strict=True):
            order.append(y)
            seen[y] = x
    return order, seen


def test_batches_order_and_augmentation_streams_vary_apart():
    rng = np.random.default_rng(0)
    n = 40
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n)

    def make(seed, aug_seed):
        return Batches(x, y, 8, [0.5] * 3, [0.25] * 3, device=torch.device("cpu"),
                       augment="crop-flip", seed=seed, aug_seed=aug_seed)

    o1, a1 = _by_image(make(1, 9))
    o2, a2 = _by_image(make(2, 9))
    assert o1 != o2  # another order
    assert all(torch.equal(a1[k], a2[k]) for k in a1)  # the same crops and flips per image
    o3, a3 = _by_image(make(1, 10))
    assert o3 == o1 and not all(torch.equal(a1[k], a3[k]) for k in a1)
    # aug_seed None: one stream, the permutation first (the draws of every existing run)
    g = torch.Generator().manual_seed(1 * 1_000_003 + 0)
    perm = torch.randperm(n, generator=g)
    o4, _ = _by_image(make(1, None))
    assert o4 == perm[:len(o4)].tolist()
