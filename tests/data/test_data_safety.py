"""The data layer never loses data, never writes when reading, and never costs more than its input.

Issue 11, sections 2-5 (data): hostile archives, hostile pickles, hand-edited manifests, labels
and normalization statistics that cannot be right, and `data synth` writing over what it did
not make. Each test builds the hostile input itself on tiny generated data.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cifarlens.cli import main
from cifarlens.data.dataset import read_archive, read_folder
from cifarlens.data.load import load_dataset, locate
from cifarlens.data.manifests import SIDE_FILE
from cifarlens.data.pickles import safe_unpickle
from cifarlens.data.registry import DATASETS, default_data_dir
from cifarlens.data.split import channel_stats, stratified_split, stratified_subset
from cifarlens.data.synth import ensure_synthetic, read_synth_info, write_synthetic
from cifarlens.errors import CifarlensError

SRC = Path(__file__).resolve().parents[2] / "src"
C10 = "cifar-10-batches-py"
C100 = "cifar-100-python"
HYP = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory) -> Path:
    """A data root with a tiny generated CIFAR-10-format dataset (70 images) and its archive."""
    root = tmp_path_factory.mktemp("tiny10")
    write_synthetic(root, "cifar10", train_per_class=5, test_per_class=2, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny100(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny100")
    write_synthetic(root, "cifar100", train_per_class=2, test_per_class=1, seed=0)
    return root


def snapshot(root: Path) -> list[tuple[str, int, int, bytes]]:
    """Every entry under root with its size, mtime and (for files) MD5: any write shows."""
    out = []
    for p in sorted(root.rglob("*")):
        st_ = p.lstat()
        digest = hashlib.md5(p.read_bytes()).digest() if p.is_file() else b""
        out.append((str(p.relative_to(root)), st_.st_size, st_.st_mtime_ns, digest))
    return out


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def put(folder: Path, name: str, payload: bytes) -> None:
    """Replace one data file and make the manifest agree, as a forger would."""
    (folder / name).write_bytes(payload)
    m = json.loads((folder / SIDE_FILE).read_text())
    m["md5"][name] = hashlib.md5(payload).hexdigest()
    (folder / SIDE_FILE).write_text(json.dumps(m))


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cifarlens: error:"), err
    assert "Traceback" not in err
    return lines[0]


# --- 2. archives: never extract what fails verification, never replace what exists -------------


def _tar(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """(name, data or None for a folder, type) -> tar.gz bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == tarfile.SYMTYPE:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_issue_example_hostile_archive_deletes_nothing(tiny10, tmp_path, capsys):
    """The reviewer's archive: fails the MD5 check, carries a manifest somewhere, and has
    top-level entries named like a folder beside the data and like the CIFAR-10 folder."""
    root = copy_root(tiny10, tmp_path / "data")  # its cifar-10 folder stands in for the real one
    (root / "thesis").mkdir()
    (root / "thesis" / "chapter1.tex").write_text("years of work")
    (root / "cifar-100-python.tar.gz").write_bytes(_tar([
        ("thesis", None, b""), ("thesis/evil", b"x", b""),
        (C10, None, b""), (f"{C10}/evil", b"x", b""),
        (f"x/{SIDE_FILE}", b"{}", b""),
    ]))
    before = snapshot(root)
    for argv in (["data", "verify"], ["data", "download"]):
        rc, err = run_cli([*argv, "--dataset", "cifar100", "--data-dir", str(root)], capsys)
        assert rc == 1
        line = one_line_error(err)
        assert "refusing" in line and "failed verification" in line
        assert snapshot(root) == before
    assert load_dataset("cifar10", root, download=False).num_classes == 10


_MUTATIONS = ["outside", "extra_inside", "drop", "corrupt", "duplicate", "no_boxes", "symlink",
              "foreign_manifest_name"]


@given(muts=st.lists(st.sampled_from(_MUTATIONS), max_size=3, unique=True),
       which=st.integers(0, 6))
@settings(HYP)
def test_archive_property_valid_or_refused_with_nothing_written(tiny10, tmp_path_factory, muts,
                                                                which):
    """Any archive is either exactly a generated dataset (read in memory; preparing creates only
    the dataset folder) or refused by every reader, with not one byte written anywhere."""
    folder = tiny10 / C10
    names = sorted(p.name for p in folder.iterdir() if p.name != SIDE_FILE)
    files = {n: (folder / n).read_bytes() for n in names}
    manifest = json.loads((folder / SIDE_FILE).read_text())
    target = names[which % len(names)]
    members: list[tuple[str, bytes | None, bytes]] = [(C10, None, b"")]
    for n in names:
        data = files[n]
        if "corrupt" in muts and n == target:
            data = data[:-1] + bytes([data[-1] ^ 1])
        if "drop" in muts and n == target:
            continue
        if "symlink" in muts and n == target:
            members.append((f"{C10}/{n}", b"", tarfile.SYMTYPE))
            continue
        members.append((f"{C10}/{n}", data, b""))
        if "duplicate" in muts and n == target:
            members.append((f"{C10}/{n}", data, b""))
    if "no_boxes" in muts:
        manifest = {k: v for k, v in manifest.items() if k != "boxes"}
    members.append((f"{C10}/{SIDE_FILE}", json.dumps(manifest).encode(), b""))
    if "outside" in muts:
        members.append(("neighbour/file", b"x", b""))
    if "extra_inside" in muts:
        members.append((f"{C10}/readme.html", b"<p>", b""))
    if "foreign_manifest_name" in muts:
        members.append((f"other/{SIDE_FILE}", b"{}", b""))

    root = tmp_path_factory.mktemp("prop")
    (root / "neighbour").mkdir()
    (root / "neighbour" / "keep").write_text("mine")
    (root / "cifar-10-python.tar.gz").write_bytes(_tar(members))
    before = snapshot(root)
    if not muts:
        d = load_dataset("cifar10", root, download=False)
        assert d.source == "generated" and len(d.train_y) == 50
        assert snapshot(root) == before
        locate("cifar10", root, download=True)
        assert sorted(p.name for p in root.iterdir()) == [C10, "cifar-10-python.tar.gz",
                                                          "neighbour"]
        assert snapshot(root)[:1] != before[:1] and (root / "neighbour" / "keep").exists()
        return
    for attempt in (lambda: load_dataset("cifar10", root, download=False),
                    lambda: locate("cifar10", root, download=True, progress=False),
                    lambda: read_synth_info(root / C10)):
        with pytest.raises(CifarlensError) as e:
            attempt()
        assert "\n" not in str(e.value)
        assert snapshot(root) == before


def test_safe_extract_refuses_to_replace_and_locate_never_replaces(tiny10, tmp_path):
    root = copy_root(tiny10, tmp_path / "data")
    (root / C10 / "mine.txt").write_text("not ours")
    before = snapshot(root)
    assert locate("cifar10", root, download=True) == root / C10  # the folder is used as it is
    assert snapshot(root) == before


# --- 2. data synth writes only into an empty or cifarlens-made folder ----------------------------


def test_synth_refuses_official_data_and_foreign_files(tiny10, tmp_path, monkeypatch, capsys):
    # "Official" files: make the official checksum table name a file we have, as the real
    # CIFAR-10 files would match it.
    root = copy_root(tiny10, tmp_path / "data")
    (root / C10 / SIDE_FILE).unlink()
    md5 = hashlib.md5((root / C10 / "test_batch").read_bytes()).hexdigest()
    spec = dict(DATASETS["cifar10"], md5=dict(DATASETS["cifar10"]["md5"], test_batch=md5))
    monkeypatch.setitem(DATASETS, "cifar10", spec)
    before = snapshot(root)
    rc, err = run_cli(["data", "synth", "--dataset", "cifar10", "--data-dir", str(root),
                       "--train-per-class", "1", "--test-per-class", "1"], capsys)
    assert rc == 1 and "holds official cifar10 files (test_batch)" in one_line_error(err)
    assert snapshot(root) == before

    # The official archive is never overwritten either.
    root2 = tmp_path / "data2"
    root2.mkdir()
    (root2 / "cifar-10-python.tar.gz").write_bytes(b"the real archive")
    spec = dict(spec, archive_md5=hashlib.md5(b"the real archive").hexdigest())
    monkeypatch.setitem(DATASETS, "cifar10", spec)
    with pytest.raises(CifarlensError, match="it is the official cifar10 archive"):
        write_synthetic(root2, "cifar10", train_per_class=1, test_per_class=1)
    assert (root2 / "cifar-10-python.tar.gz").read_bytes() == b"the real archive"
    assert [p.name for p in root2.iterdir()] == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("case", ["foreign_file", "bad_manifest", "not_an_archive", "symlink",
                                  "file_for_folder"])
def test_synth_refuses_what_it_did_not_make(tiny10, tmp_path, case):
    root = copy_root(tiny10, tmp_path / "data")
    if case == "foreign_file":
        (root / C10 / "notes.txt").write_text("mine")
    elif case == "bad_manifest":
        (root / C10 / SIDE_FILE).write_text('{"generator": "someone else"}')
    elif case == "not_an_archive":
        (root / "cifar-10-python.tar.gz").write_bytes(b"my own tarball")
    elif case == "symlink":
        shutil.rmtree(root / C10)
        (tmp_path / "elsewhere").mkdir()
        (root / C10).symlink_to(tmp_path / "elsewhere")
    else:
        shutil.rmtree(root / C10)
        (root / C10).write_text("a file")
    before = snapshot(root)
    with pytest.raises(CifarlensError, match="refusing to overwrite|not a folder") as e:
        write_synthetic(root, "cifar10", train_per_class=1, test_per_class=1)
    assert "\n" not in str(e.value)
    assert snapshot(root) == before


def test_synth_replaces_its_own_data_and_leaves_neighbours_alone(tiny10, tmp_path, capsys):
    root = copy_root(tiny10, tmp_path / "data")
    (root / "notes.txt").write_text("mine")
    shutil.copytree(root / C10, root / "my-cifar")  # an unrelated folder beside the data
    neighbours = snapshot(root / "my-cifar")
    rc, _ = run_cli(["data", "synth", "--dataset", "cifar10", "--out", str(root), "--seed", "3",
                     "--train-per-class", "5", "--test-per-class", "2"], capsys)
    assert rc == 0
    assert read_synth_info(root / C10)["seed"] == 3
    assert read_archive(root / "cifar-10-python.tar.gz", "cifar10").extra["manifest"]["seed"] == 3
    assert (root / "notes.txt").read_text() == "mine" and snapshot(root / "my-cifar") == neighbours
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_synth_takes_data_dir_and_defaults_to_the_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLENS_DATA", str(tmp_path / "env-data"))
    rc, _ = run_cli(["data", "synth", "--dataset", "cifar10", "--train-per-class", "1",
                     "--test-per-class", "1"], capsys)
    assert rc == 0 and (tmp_path / "env-data" / C10 / SIDE_FILE).is_file()
    rc, _ = run_cli(["data", "synth", "--dataset", "cifar10", "--data-dir", str(tmp_path / "d"),
                     "--train-per-class", "1", "--test-per-class", "1"], capsys)
    assert rc == 0 and load_dataset("cifar10", tmp_path / "d", download=False).source \
        == "generated"
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    help_text = capsys.readouterr().out
    assert "--data-dir DIR, --out DIR" in help_text
    assert "200 for cifar10, 50 for cifar100" in " ".join(help_text.split())


# --- 2. reading never writes; recorded paths are absolute ----------------------------------------


def test_reading_an_archive_writes_nothing(tiny10, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(tiny10 / "cifar-10-python.tar.gz", root)
    before = snapshot(root)
    rc, err = run_cli(["data", "verify", "--dataset", "cifar10", "--data-dir", str(root)], capsys)
    assert rc == 0, err
    assert snapshot(root) == before
    info = read_synth_info(root / C10)  # archive-only generated data: its manifest
    assert len(info["boxes"]["test"]) == 20 and snapshot(root) == before


def test_evaluate_of_a_copied_run_never_writes_into_its_data_folder(run_copy, synth100, tmp_path,
                                                                   capsys):
    from cifarlens.stages.evaluate import evaluate

    root = tmp_path / "archive-only"
    root.mkdir()
    shutil.copy(synth100 / "cifar-100-python.tar.gz", root)
    before = snapshot(root)
    evaluate(run_copy, ("test",), data_dir=str(root), log=lambda m: None)
    assert (run_copy / "predictions_test.npz").is_file()
    assert snapshot(root) == before  # the archive was read in memory, nothing extracted
    rc = main(["data", "verify", "--data-dir", str(root)])
    assert rc == 0 and "(read in place)" in capsys.readouterr().out
    assert snapshot(root) == before


def test_data_dir_is_absolute_wherever_it_is_given(tiny10, tmp_path, monkeypatch):
    copy_root(tiny10, tmp_path / "rel" / "data")
    monkeypatch.chdir(tmp_path)
    d = load_dataset("cifar10", "rel/data", download=False)
    assert d.folder == tmp_path / "rel" / "data" / C10 and d.folder.is_absolute()
    assert locate("cifar10", "rel/./data/../data", download=False) == d.folder
    monkeypatch.setenv("CIFARLENS_DATA", "rel/data")
    assert default_data_dir() == tmp_path / "rel" / "data"
    assert load_dataset("cifar10", None, download=False).folder == d.folder
    monkeypatch.chdir(tmp_path / "rel")  # elsewhere, the recorded path still names the same data
    assert load_dataset("cifar10", str(d.folder.parent), download=False).folder == d.folder


# --- 2. a half-written generated dataset is never left under its name, and is rewritten --------


def test_killed_synth_leaves_no_half_dataset_and_the_rerun_completes(tmp_path):
    root = tmp_path / "data"
    script = (
        "import os, signal, builtins, sys\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "import cifarlens.data.download as dl\n"
        "from cifarlens.data.synth import write_synthetic\n"
        "real, n = builtins.open, [0]\n"
        "def dying_open(path, mode='r', *a, **k):\n"
        "    if 'x' in mode:\n"
        "        n[0] += 1\n"
        "        if n[0] == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(path, mode, *a, **k)\n"
        "dl.open = dying_open\n"
        f"write_synthetic({str(root)!r}, 'cifar10', train_per_class=2, test_per_class=1,"
        " archive=False)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    assert not (root / C10).exists()  # only a hidden temp folder, never a half dataset
    folder = ensure_synthetic(root, "cifar10", train_per_class=2, test_per_class=1)
    assert read_folder(folder, "cifar10").source == "generated"


@pytest.mark.parametrize("leftover", ["no_manifest", "missing_file", "other_settings"])
def test_ensure_synthetic_rewrites_incomplete_or_different_data(tmp_path, leftover):
    root = tmp_path / "demo" / "data"
    kw = {"train_per_class": 2, "test_per_class": 1, "seed": 0, "label_noise": 0.03}
    folder = write_synthetic(root, "cifar100", **kw)
    if leftover == "no_manifest":  # what an older cifarlens left when killed mid-write
        (folder / SIDE_FILE).unlink()
        (folder / "meta").unlink()
    elif leftover == "missing_file":
        (folder / "meta").unlink()
    else:
        kw["seed"] = 1
    with pytest.raises(CifarlensError):
        if leftover == "other_settings":
            raise CifarlensError("(the data is complete, only different)")
        read_folder(folder, "cifar100")
    assert ensure_synthetic(root, "cifar100", **kw) == folder
    assert read_folder(folder, "cifar100").extra["manifest"]["seed"] == kw["seed"]
    mtime = (folder / "train").stat().st_mtime_ns
    ensure_synthetic(root, "cifar100", **kw)  # complete and the same: kept as it is
    assert (folder / "train").stat().st_mtime_ns == mtime


# --- 3. hostile pickles: memory stays proportional to the file ----------------------------------


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _reconstruct():
    from numpy._core.multiarray import _reconstruct
    return _reconstruct


def hostile_pickle(kind: str, size: int) -> bytes:
    """A small pickle that passes the restricted unpickler's globals but declares `size` units
    of something: the attacks the reviewer used and their relatives."""
    labels = [0] * 2
    if kind == "declared_shape":  # an array allocated from its declared shape, no data
        arr = _Reduce(_reconstruct(), (np.ndarray, (size, 3072), b"B"))
        return pickle.dumps({b"data": arr, b"labels": labels}, protocol=2)
    if kind == "counted_bytes":  # BINBYTES8 declaring size x 16 KiB with none of them there
        return b"\x80\x04\x8e" + struct.pack("<Q", size << 14) + b"abc" + b"."
    if kind == "memo_index":  # LONG_BINPUT at a huge index: the memo table grows to it
        return b"\x80\x02}r" + struct.pack("<I", size << 8) + b"."
    if kind == "nested_labels":  # a list of shared lists: np.asarray would expand them
        inner = [0] * 4000
        mid = [inner] * max(1, size // 100)
        x = np.zeros((10, 3072), np.uint8)
        return pickle.dumps({b"data": x, b"labels": [mid] * 10}, protocol=2)
    if kind == "repeated_names":  # one long name referenced by every class
        name = b"n" * (size << 8)
        return pickle.dumps({b"label_names": [name] * 10}, protocol=2)
    if kind == "object_array":
        return pickle.dumps({b"data": np.array([[0] * 4] * size, dtype=object)}, protocol=2)
    raise AssertionError(kind)


def _peak_reading(call) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    err = None
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the test inspects what was raised
        err = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, err


@given(kind=st.sampled_from(["declared_shape", "counted_bytes", "memo_index", "nested_labels",
                             "repeated_names", "object_array"]),
       size=st.integers(10_000, 50_000),
       target=st.sampled_from(["test_batch", "data_batch_3", "batches.meta"]))
@settings(HYP)
def test_hostile_pickles_are_refused_within_memory_proportional_to_the_file(
        tiny10, tmp_path_factory, kind, size, target):
    if kind == "repeated_names":
        target = "batches.meta"
    root = copy_root(tiny10, tmp_path_factory.mktemp("h") / "data")
    payload = hostile_pickle(kind, size)
    put(root / C10, target, payload)
    total = sum(p.stat().st_size for p in (root / C10).iterdir())
    peak, err = _peak_reading(lambda: load_dataset("cifar10", root, download=False))
    assert isinstance(err, CifarlensError), repr(err)
    assert "\n" not in str(err)
    assert peak <= 4 * total + (8 << 20), f"{kind}: peak {peak >> 20} MiB for {total} bytes"


def test_reading_legit_data_fits_the_same_memory_bound(tiny10):
    total = sum(p.stat().st_size for p in (tiny10 / C10).iterdir())
    peak, err = _peak_reading(lambda: load_dataset("cifar10", tiny10, download=False))
    assert err is None and peak <= 4 * total + (8 << 20)


def test_issue_example_tiny_pickle_declaring_many_images_cli_memory(tiny10, tmp_path):
    """The reviewer's case through the real command in a fresh process: a few hundred bytes
    declaring 100,000 images (300 MiB). Peak RSS may not grow by more than 64 MiB."""
    root = copy_root(tiny10, tmp_path / "data")
    payload = hostile_pickle("declared_shape", 100_000)
    assert len(payload) < 400
    put(root / C10, "test_batch", payload)
    script = (
        "import json, resource, sys\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "from cifarlens.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"rc = main(['data', 'verify', '--dataset', 'cifar10', '--data-dir', {str(root)!r}])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'rc': rc, 'grew_kib': after - before}))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 1 and "Traceback" not in r.stderr
    assert "refusing to load" in r.stderr and "shape (100000, 3072)" in r.stderr
    assert out["grew_kib"] < 64 * 1024, out


def test_restricted_unpickler_still_reads_what_numpy_writes():
    obj = {b"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072) % 251,
           b"labels": [1, 2], b"n": np.int64(7), b"f": np.float32(0.5), b"name": b"x"}
    back = safe_unpickle(pickle.dumps(obj, protocol=2))
    assert np.array_equal(back[b"data"], obj[b"data"]) and back[b"labels"] == [1, 2]
    assert back[b"n"] == 7 and back[b"f"] == np.float32(0.5) and back[b"name"] == b"x"


@pytest.mark.parametrize("payload,msg", [
    (b"\x80\x02(cnumpy\ndtype\nX\x01\x00\x00\x00Oq\x00\x89\x88\x87R.", "dtype 'O'"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.", "zlib"),
    (b"\x80\x02N\x81.", "NEWOBJ"),
])
def test_unpickler_refuses_globals_used_other_than_numpy_does(payload, msg):
    with pytest.raises(CifarlensError, match=msg):
        safe_unpickle(payload)


# --- 4. the manifest is validated when it is read ------------------------------------------------

_MANIFEST_BREAKS = {
    "drop_boxes": lambda m: m.pop("boxes"),
    "drop_md5": lambda m: m.pop("md5"),
    "boxes_short": lambda m: m["boxes"]["test"].pop(),
    "box_outside": lambda m: m["boxes"]["train"].__setitem__(3, [0, 0, 40, 5]),
    "box_float": lambda m: m["boxes"]["train"].__setitem__(0, [0.5, 0, 4, 5]),
    "sizes": lambda m: m["sizes"].__setitem__("test", 21),
    "generator": lambda m: m.__setitem__("generator", "me"),
    "dataset": lambda m: m.__setitem__("dataset", "cifar100"),
    "version": lambda m: m.__setitem__("version", 99),
    "classes": lambda m: m["classes"].pop(),
    "flip_index": lambda m: m["flipped_labels"]["test"].append(
        {"index": 10**6, "original": 0, "noisy": 1}),
    "md5_extra_file": lambda m: m["md5"].__setitem__("extra", "0" * 32),
    "md5_not_hex": lambda m: m["md5"].__setitem__("test_batch", "z" * 32),
    "label_noise": lambda m: m.__setitem__("label_noise", True),
    "not_object": lambda m: None,
}


@given(breaks=st.lists(st.sampled_from(sorted(_MANIFEST_BREAKS)), min_size=1, max_size=3,
                       unique=True))
@settings(HYP)
def test_manifest_property_any_break_is_one_line_naming_the_file(tiny10, tmp_path_factory,
                                                                 breaks):
    root = copy_root(tiny10, tmp_path_factory.mktemp("m") / "data")
    path = root / C10 / SIDE_FILE
    m = json.loads(path.read_text())
    for b in breaks:  # the first always applies; a later one may find its key already gone
        with contextlib.suppress(KeyError, IndexError):
            _MANIFEST_BREAKS[b](m)
    path.write_text(json.dumps([m] if "not_object" in breaks else m))
    for read in (lambda: load_dataset("cifar10", root, download=False),
                 lambda: read_synth_info(root / C10, verify=False)):
        with pytest.raises(CifarlensError) as e:
            read()
        assert str(e.value).startswith(f"bad manifest {path}: ") and "\n" not in str(e.value)


def test_manifest_without_boxes_fails_before_any_work(tiny10, tmp_path, capsys):
    root = copy_root(tiny10, tmp_path / "data")
    path = root / C10 / SIDE_FILE
    m = json.loads(path.read_text())
    del m["boxes"]
    path.write_text(json.dumps(m))
    rc, err = run_cli(["data", "verify", "--dataset", "cifar10", "--data-dir", str(root)], capsys)
    assert rc == 1 and f"bad manifest {path}: missing boxes" in one_line_error(err)


@pytest.mark.parametrize("junk", [b"[" * 100_000, b'{"a": 1', b"\xff\xfe", b" " * (1 << 20)])
def test_manifest_junk_deep_or_oversized_is_one_line(tiny10, tmp_path, junk):
    root = copy_root(tiny10, tmp_path / "data")
    (root / C10 / SIDE_FILE).write_bytes(junk)
    with pytest.raises(CifarlensError, match="bad manifest") as e:
        load_dataset("cifar10", root, download=False)
    assert "\n" not in str(e.value)


# --- 5. labels, the coarse mapping, normalization statistics, subsets ----------------------------


def _rewrite(folder: Path, name: str, edit) -> None:
    d = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    edit(d)
    put(folder, name, pickle.dumps(d, protocol=2))


@pytest.mark.parametrize("value,word", [(2.5, "float"), (3.0, "float"), (True, "bool"),
                                        ("7", "str"), ([1], "list")])
def test_non_integer_labels_are_refused(tiny10, tmp_path, value, word):
    root = copy_root(tiny10, tmp_path / "data")
    _rewrite(root / C10, "data_batch_2", lambda d: d[b"labels"].__setitem__(4, value))
    with pytest.raises(CifarlensError, match=f"label 4 is .*{word}.*must be integers"):
        load_dataset("cifar10", root, download=False)


def test_float_label_array_is_refused(tiny10, tmp_path):
    root = copy_root(tiny10, tmp_path / "data")
    _rewrite(root / C10, "test_batch",
             lambda d: d.__setitem__(b"labels", np.asarray(d[b"labels"], dtype=np.float64)))
    with pytest.raises(CifarlensError, match="need integers, got a float64 array"):
        load_dataset("cifar10", root, download=False)


def test_fine_class_with_two_coarse_classes_is_refused_by_name(tiny100, tmp_path):
    root = copy_root(tiny100, tmp_path / "data")
    d = pickle.loads((root / C100 / "test").read_bytes(), encoding="bytes")
    i = d[b"fine_labels"].index(3)  # a test image of "bear" (large_carnivores)
    _rewrite(root / C100, "test", lambda d: d[b"coarse_labels"].__setitem__(i, 12))
    with pytest.raises(CifarlensError, match=r"fine class 3 \(bear\) is labelled coarse "
                                             r"8 \(large_carnivores\), 12 \(medium_mammals\)"):
        load_dataset("cifar100", root, download=False)


def test_coarse_labels_must_form_twenty_groups(tiny100, tmp_path):
    root = copy_root(tiny100, tmp_path / "data")
    for name in ("train", "test"):  # consistently merge coarse class 19 into 18
        _rewrite(root / C100, name, lambda d: d.__setitem__(
            b"coarse_labels", [18 if c == 19 else c for c in d[b"coarse_labels"]]))
    with pytest.raises(CifarlensError, match=r"form 19 groups, need 20: coarse classes "
                                             r"19 \(vehicles_2\) have no fine class"):
        load_dataset("cifar100", root, download=False)


@given(channel=st.integers(0, 2), value=st.integers(0, 255), n=st.integers(1, 20),
       seed=st.integers(0, 2**16))
@settings(HYP)
def test_constant_channel_is_refused_by_name(channel, value, n, seed):
    x = np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    x[:, channel] = value
    names = ("red", "green", "blue")
    with pytest.raises(CifarlensError, match=f"colour channel {channel} \\({names[channel]}\\) "
                                             "is constant"):
        channel_stats(x)
    x[0, channel, 0, 0] = (value + 128) % 256  # one pixel of a real difference is enough
    mean, std = channel_stats(x)
    assert all(s > 0 for s in std)


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30), frac=st.floats(0, 1.2),
       seed=st.integers(0, 1000))
@settings(HYP)
def test_stratified_subset_gives_exactly_n_or_refuses(sizes, frac, seed):
    labels = np.repeat(np.arange(len(sizes)) * 3, sizes)  # class ids need not be 0..k-1
    rng = np.random.default_rng(seed)
    labels = labels[rng.permutation(len(labels))]
    indices = np.sort(rng.permutation(len(labels) + 5)[:len(labels)]) % len(labels)
    indices = np.unique(indices)
    k = len(np.unique(labels[indices]))
    n = max(1, int(round(frac * len(indices))))
    if n < k:
        with pytest.raises(CifarlensError, match=f"below one image per class.*at least {k}"):
            stratified_subset(labels, indices, n, seed)
        return
    sub = stratified_subset(labels, indices, n, seed)
    assert len(sub) == min(n, len(indices)) and len(np.unique(sub)) == len(sub)
    assert set(sub.tolist()) <= set(indices.tolist())
    counts = {c: int((labels[sub] == c).sum()) for c in np.unique(labels[indices])}
    assert min(counts.values()) >= 1  # no class dropped
    if n < len(indices):
        have = {c: int((labels[indices] == c).sum()) for c in counts}
        spare = sum(have.values()) - k
        for c, q in counts.items():  # proportional: within one image of the exact share
            assert abs((q - 1) - (n - k) * (have[c] - 1) / spare) < 1
    assert np.array_equal(sub, stratified_subset(labels, indices, n, seed))


def test_train_limit_150_uses_150_and_50_is_refused_before_anything_is_written(synth100,
                                                                              tmp_path):
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    y = load_dataset("cifar100", synth100, download=False).train_y
    tr, _ = stratified_split(y, 0.2, seed=0)
    assert len(stratified_subset(y, tr, 150, seed=0)) == 150
    out = tmp_path / "run"
    cfg = make_config("smoke", data_dir=str(synth100), device="cpu", train_limit=50)
    with pytest.raises(CifarlensError, match="--train-limit 50 is below one image per class"):
        train(cfg, out, progress=False, log=lambda m: None)
    written = {p.name for p in out.rglob("*")} if out.exists() else set()
    assert not written & {"norm.json", "split.npz", "config.json"}
