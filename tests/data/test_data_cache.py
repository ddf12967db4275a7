"""The data is read and verified once per process: later loads reuse it unless a file changed."""

import os
import shutil

import numpy as np
import pytest

from cifarlens.data import dataset, load, pickles, userdata
from cifarlens.data.dataset import read_folder
from cifarlens.data.load import _CACHE, CACHE_SIZE, clear_cache, load_dataset
from cifarlens.data.pickles import md5_bytes
from cifarlens.errors import CifarlensError


@pytest.fixture
def counted(monkeypatch):
    """Counts every MD5 computed by data.py (every verification of a data file)."""
    calls = []
    real = md5_bytes

    def md5(b):
        calls.append(len(b))
        return real(b)

    for module in (pickles, dataset):  # each binds the name at import
        monkeypatch.setattr(module, "md5_bytes", md5)
    # userdata binds the name at import: patch it there too, or the count depends on test order
    monkeypatch.setattr(userdata, "md5_bytes", md5)
    clear_cache()
    yield calls
    clear_cache()


def _aged_copy(src, dst):
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))  # older than the racy window
    return dst


def test_a_study_like_sequence_verifies_each_file_once(synth100, tmp_path, counted):
    root = _aged_copy(synth100, tmp_path / "d")
    folder = root / "cifar-100-python"
    # what one 2-run study does: train (download=True) twice, then evaluate, failures, explain,
    # load_split and the summary read it with download=False, by the root or the folder
    loads = []
    for kw in [dict(download=True), dict(download=True)] + [dict(download=False)] * 6:
        loads.append(load_dataset("cifar100", root, **kw))
    loads.append(load_dataset("cifar100", folder, download=False))
    assert len(counted) == 3  # meta, train, test: once each
    assert all(d.train_x is loads[0].train_x for d in loads)  # the same verified arrays
    assert loads[1].identity == loads[0].identity and loads[1].identity is not loads[0].identity


def test_a_changed_file_is_verified_again(synth100, tmp_path, counted):
    root = _aged_copy(synth100, tmp_path / "d")
    load_dataset("cifar100", root, download=False)
    assert len(counted) == 3
    f = root / "cifar-100-python" / "test"
    st = f.stat()
    raw = bytearray(f.read_bytes())
    raw[-100] ^= 1  # same size
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # a different, old mtime
    with pytest.raises(CifarlensError, match="checksum mismatch.*test"):
        load_dataset("cifar100", root, download=False)


def test_an_in_place_change_within_the_clock_tick_is_caught(synth100, tmp_path, counted,
                                                          monkeypatch):
    # A rewrite of the same size inside one timestamp tick keeps size and mtime: files written
    # shortly before they were read are therefore never trusted from the cache. The window is
    # widened so that a slow (loaded) machine cannot push the copy out of it.
    monkeypatch.setattr(load, "RACY_NS", 3600 * 10**9)
    root = tmp_path / "d"
    shutil.copytree(synth100, root)  # fresh mtimes
    f = root / "cifar-100-python" / "test"
    load_dataset("cifar100", root, download=False)
    st = f.stat()
    raw = bytearray(f.read_bytes())
    raw[-100] ^= 1
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, same inode
    with pytest.raises(CifarlensError, match="checksum mismatch"):
        load_dataset("cifar100", root, download=False)


def test_user_data_is_cached_and_rechecked(tmp_path, counted):
    from test_userdata import make_cifar100_layout

    from cifarlens.data.registry import USER_MANIFEST
    from cifarlens.data.userdata import register

    folder = make_cifar100_layout(tmp_path / "u" / "cifar-100-python")
    register(folder)
    for p in folder.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))
    counted.clear()
    a = load_dataset("user", tmp_path / "u")
    b = load_dataset("user", folder, download=False)
    assert len(counted) == 3 and a.train_x is b.train_x
    m = folder / USER_MANIFEST  # a new registration is a new dataset: read again
    st = m.stat()
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_dataset("user", folder)
    assert len(counted) == 6


def test_the_cache_is_bounded(synth100, synth10, tmp_path, counted):
    r100 = _aged_copy(synth100, tmp_path / "a")
    r10 = _aged_copy(synth10, tmp_path / "b")
    r100b = _aged_copy(synth100, tmp_path / "c")
    for root, name in ((r100, "cifar100"), (r10, "cifar10"), (r100b, "cifar100")):
        load_dataset(name, root, download=False)
    n = len(counted)
    load_dataset("cifar10", r10, download=False)  # still held
    assert len(counted) == n
    load_dataset("cifar100", r100, download=False)  # the oldest was dropped: read again
    assert len(counted) == n + 3
    assert len(_CACHE.entries) == CACHE_SIZE


def test_cached_arrays_are_what_a_fresh_read_gives(synth100, tmp_path, counted):
    root = _aged_copy(synth100, tmp_path / "d")
    a = load_dataset("cifar100", root, download=False)
    b = load_dataset("cifar100", root, download=False)
    fresh = read_folder(root / "cifar-100-python", "cifar100")
    for k in ("train_x", "train_y", "test_x", "test_y", "fine_to_coarse"):
        assert np.array_equal(getattr(b, k), getattr(fresh, k))
    assert b.identity == fresh.identity == a.identity
