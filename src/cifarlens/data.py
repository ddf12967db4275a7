"""CIFAR-10/100 from the official python-format files: locate, download, verify, read, split, batch.

Data never runs code and never costs more than its size: every pickle is MD5-checked first
(against the official checksums, or the validated manifest of a dataset `cifarlens data synth`
generated), its opcodes are scanned before unpickling (no declared length beyond the file's end,
no memo index out of proportion, no object-building opcodes), and it is read with an unpickler
that allows only the few numpy globals the format needs, each checked so that an array is only
ever as large as the bytes that carry it.

Reading never writes: `load_dataset(..., download=False)` reads an extracted folder, or the
members of a verified archive in memory. Only a caller that asks to prepare the data
(`download=True`: `cifarlens data download`, `train`) writes, and then only new names (the
archive, then the dataset folder renamed into place from a temp folder once every file in it
verified); nothing that exists is replaced or deleted.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import os
import pickle
import pickletools
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import CifarlensError

ENV_DATA_DIR = "CIFARLENS_DATA"
SYNTH_MANIFEST = "cifarlens-synth.json"
USER_MANIFEST = "cifarlens-data.json"  # the user's own data: userdata.py

DATASETS: dict[str, dict] = {
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive": "cifar-100-python.tar.gz",
        "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "num_classes": 100,
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "md5": {
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    },
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive": "cifar-10-python.tar.gz",
        "archive_md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "num_classes": 10,
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "md5": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    },
}

USER = "user"


class _UserSpec(dict):
    """The `user` entry of DATASETS: the user's own data in the CIFAR python format, described
    by the manifest `cifarlens data register`/`import` wrote beside its files (userdata.py).
    What the official entries fix (classes, files, checksums) is read from that manifest, so
    asking this table for it is a clear error, not a KeyError."""

    def __missing__(self, key: str):
        raise CifarlensError(f"the {key.replace('_', ' ')} of user data is read from its folder's "
                             f"manifest, not known in advance (this command needs --dataset "
                             f"{' or '.join(n for n in DATASETS if n != USER)})")


# `--dataset user --data-dir DIR`: see userdata.py for the folder layout and its manifest.
DATASETS[USER] = _UserSpec(folder="cifarlens-user")

# A manifest lists a few small fields and one box (and at most one flipped label) per image:
# anything larger than this per image the data files can hold is not a manifest.
MANIFEST_BYTES_PER_IMAGE = 160
MANIFEST_BASE_BYTES = 64 * 1024


def dataset_spec(name: str) -> dict:
    if name not in DATASETS:
        raise CifarlensError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $CIFARLENS_DATA, else the user's cache folder; always absolute.

    Absolute and resolved, so a run records where its data really was, not a path relative to
    the folder it happened to be started from.
    """
    if data_dir:
        root = Path(data_dir).expanduser()
    elif os.environ.get(ENV_DATA_DIR):
        root = Path(os.environ[ENV_DATA_DIR]).expanduser()
    else:
        try:
            import platformdirs
        except ImportError:  # e.g. a bare GPU image: fall back to the Linux convention
            root = Path("~/.cache/cifarlens/data").expanduser()
        else:
            root = Path(platformdirs.user_cache_dir("cifarlens")) / "data"
    try:
        return root.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable parent
        raise CifarlensError(f"cannot use data folder {root}: {e}") from None


# --- safe reading ------------------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    pass


class _Corrupt(pickle.UnpicklingError):
    pass


# Object-building and out-of-band opcodes the format never uses.
_FORBIDDEN_OPCODES = frozenset({"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ",
                                "NEWOBJ", "NEWOBJ_EX", "BYTEARRAY8", "NEXT_BUFFER",
                                "READONLY_BUFFER"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_OPCODE_AT: list[pickletools.OpcodeInfo | None] = [None] * 256
for _op in pickletools.opcodes:
    _OPCODE_AT[ord(_op.code)] = _op
_COUNTED = {  # length-prefixed arguments: (width of the length, struct format)
    pickletools.TAKEN_FROM_ARGUMENT1: (1, "<B"),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, "<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, "<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, "<Q"),
}


def _scan_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes without building anything; refuse what would cost more than the
    file's own size once unpickled.

    CPython's unpickler allocates a counted string's declared length before reading it, and grows
    its memo table to the largest PUT index it sees: a few bytes could ask for gigabytes.
    """
    end, pos, ops = len(data), 0, 0
    while pos < end:
        op = _OPCODE_AT[data[pos]]
        if op is None:
            raise _Corrupt(f"unknown opcode {data[pos:pos + 1]!r} at byte {pos}")
        name, arg = op.name, op.arg
        if name in _FORBIDDEN_OPCODES:
            raise _Refused(f"opcode {name} (never used by the format)")
        start, pos, ops = pos, pos + 1, ops + 1
        if arg is None:
            if name == "STOP":
                return
            continue
        value = None
        if arg.n in _COUNTED:
            width, fmt = _COUNTED[arg.n]
            if pos + width > end:
                raise _Corrupt("truncated")
            (n,) = struct.unpack_from(fmt, data, pos)
            pos += width
            if not 0 <= n <= end - pos:
                raise _Corrupt(f"{name} at byte {start} declares {n} bytes but only {end - pos} "
                               "remain")
            pos += n
        elif arg.n >= 0:  # fixed width
            if pos + arg.n > end:
                raise _Corrupt("truncated")
            if name in ("BINPUT", "LONG_BINPUT", "FRAME"):
                value = int.from_bytes(data[pos:pos + arg.n], "little")
            pos += arg.n
        else:  # text arguments up to a newline (protocol 0; rare): pickletools reads them
            f = io.BytesIO(data)
            f.seek(pos)
            try:
                value = arg.reader(f)
            except ValueError:
                raise _Corrupt(f"bad {name} argument") from None
            pos = f.tell()
        if name == "FRAME" and value > end - pos:
            raise _Corrupt(f"a frame of {value} bytes but only {end - pos} remain")
        if name in _MEMO_PUT and not (isinstance(value, int) and 0 <= value <= ops):
            raise _Refused(f"memo index {value} after {ops} opcodes")
    raise _Corrupt("truncated (no STOP opcode)")


_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"})


def _guarded(module: str, name: str, real):
    """The allowed globals, each refusing arguments that would build something bigger than the
    bytes that describe it (numpy itself writes exactly these forms)."""
    if name == "_reconstruct":
        def reconstruct(subtype, shape, dtype):
            # numpy pickles an array as an empty (0,) array plus its state (shape and raw bytes,
            # whose length numpy checks); a declared shape here would allocate with no bytes.
            if subtype is not np.ndarray or type(shape) is not tuple or shape != (0,):
                raise _Refused(f"an array declared with shape {_short(shape)} before its data")
            return real(subtype, shape, dtype)
        return reconstruct
    if name == "dtype":
        def dtype(obj, align=False, copy=False):
            key = obj.decode("latin-1") if isinstance(obj, bytes) else obj
            if not isinstance(key, str) or key not in _DTYPES:
                raise _Refused(f"dtype {_short(obj)} (the format uses plain numbers only)")
            return real(key, bool(align), bool(copy))
        return dtype
    if name == "scalar":
        def scalar(dt, obj=None):
            if not (isinstance(dt, np.dtype) and dt.kind in "biuf" and isinstance(obj, bytes)
                    and len(obj) == dt.itemsize):
                raise _Refused(f"a numpy scalar of {_short(dt)}")
            return real(dt, obj)
        return scalar
    if (module, name) == ("_codecs", "encode"):
        def encode(obj, encoding="utf-8", errors="strict"):
            if not (isinstance(obj, str) and encoding in ("latin1", "latin-1")
                    and errors == "strict"):
                raise _Refused(f"_codecs.encode with {_short(encoding)}")
            return obj.encode("latin-1")
        return encode
    if name == "bytes":
        def empty_bytes(*args):
            if args:
                raise _Refused(f"bytes{_short(args)}")
            return b""
        return empty_bytes
    return real  # numpy.ndarray: only ever passed to _reconstruct


def _short(obj: object, limit: int = 60) -> str:
    r = repr(obj) if not isinstance(obj, tuple | list) or len(obj) < 16 else \
        f"<{type(obj).__name__} of {len(obj)} items>"
    return r if len(r) <= limit else r[:limit] + "..."


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1"): pure, safe.
    ("_codecs", "encode"),
    # ... and an empty bytes (an empty class name) as bytes(): only ever called with no argument
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the numpy array reconstruction the CIFAR format needs; refuses everything else."""

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in _ALLOWED_GLOBALS:
            return _guarded(module, name, super().find_class(module, name))
        raise _ForbiddenGlobal(f"forbidden global {module}.{name}")


def safe_unpickle(data: bytes, source: str = "data file") -> dict:
    try:
        _scan_opcodes(data)
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (_ForbiddenGlobal, _Refused) as e:
        raise CifarlensError(f"refusing to load {source}: {e} (tampered or not a CIFAR file)") from None
    except _Corrupt as e:
        raise CifarlensError(f"cannot read {source}: corrupt pickle ({e})") from None
    except Exception as e:  # truncated or garbage pickles raise many types
        raise CifarlensError(f"cannot read {source}: corrupt pickle ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CifarlensError(f"cannot read {source}: expected a dict, got {type(obj).__name__}")
    return obj


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _check_md5(data: bytes, name: str, md5s: dict[str, str], where: str) -> str:
    """The file's MD5, once it matched the expected one."""
    want = md5s.get(name)
    got = md5_bytes(data)
    if want is None or got != want:
        raise CifarlensError(f"checksum mismatch for {where}: expected MD5 {want}, got {got}; "
                             "the file is corrupt or was modified (delete it and download again)")
    return got


def _images(d: dict, source: str, file_bytes: int, side: int = 32) -> np.ndarray:
    x = d.get(b"data")
    row = 3 * side * side
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != row:
        raise CifarlensError(f"bad image array in {source}: need uint8 (N, {row}) "
                             f"({side}x{side} RGB rows)")
    if x.nbytes > file_bytes:  # unreachable through the guarded unpickler; kept as the rule
        raise CifarlensError(f"{source} declares {len(x)} images ({x.nbytes} bytes) but holds "
                             f"only {file_bytes} bytes")
    return x.reshape(-1, 3, side, side)


def _labels(d: dict, key: bytes, n: int, k: int, source: str) -> np.ndarray:
    """Exactly n integer labels in [0, k): a list of ints or a 1-D integer array, nothing else
    (floats would be truncated silently, nested lists could expand shared objects)."""
    what = f"labels {key.decode()} in {source}"
    y = d.get(key)
    if isinstance(y, np.ndarray):
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise CifarlensError(f"bad {what}: need integers, got a {y.dtype} array of shape "
                                 f"{y.shape}")
    elif isinstance(y, list):
        if len(y) != n:
            raise CifarlensError(f"bad {what}: {len(y)} labels for {n} images")
        if not all(type(v) is int for v in y):  # the common case in one fast pass
            for i, v in enumerate(y):
                if isinstance(v, bool) or not isinstance(v, int | np.integer):
                    raise CifarlensError(f"bad {what}: label {i} is {_short(v, 30)} "
                                         f"({type(v).__name__}); labels must be integers")
    else:
        raise CifarlensError(f"bad {what}: need a list of integers, got {type(y).__name__}")
    if len(y) != n:
        raise CifarlensError(f"bad {what}: {len(y)} labels for {n} images")
    try:
        y = np.asarray(y, dtype=np.int64)
    except OverflowError:
        raise CifarlensError(f"bad {what}: need {n} ints in [0, {k})") from None
    if n and (y.min() < 0 or y.max() >= k):
        raise CifarlensError(f"bad {what}: need {n} ints in [0, {k})")
    return y


def _names(d: dict, key: bytes, k: int, source: str, file_bytes: int) -> list[str]:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != k or not all(isinstance(s, bytes | str) for s in v):
        raise CifarlensError(f"bad {key.decode()} in {source}: need {k} names")
    # One long name referenced k times costs k copies once decoded: names must fit in the file.
    if sum(len(s) for s in v) > file_bytes:
        raise CifarlensError(f"bad {key.decode()} in {source}: the names are longer than the file")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in v]


@dataclass
class CifarData:
    """A whole dataset in memory: uint8 NCHW images and int64 labels.

    `folder` is absolute (where the dataset is, or would be once extracted when it was read
    from its archive: `extra["archive"]` then names the archive). Generated data carries its
    validated manifest in `extra["manifest"]`.
    """

    name: str
    source: str  # "official" or "generated"
    folder: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None
    coarse_names: list[str] | None = None
    fine_to_coarse: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    # What the data is, by content: dataset, source and the MD5 of every file read. A run
    # records it at creation; later stages refuse data whose identity differs.
    identity: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def manifest_size_limit(data_bytes: int) -> int:
    """The most bytes a manifest may have beside data files of `data_bytes` bytes in all."""
    return MANIFEST_BASE_BYTES + MANIFEST_BYTES_PER_IMAGE * (data_bytes // 3072)


def parse_manifest(raw: bytes, where: str, name: str | None, data_bytes: int) -> dict:
    """A generated dataset's manifest, validated; or a one-line error naming the file."""
    from .synth import validate_manifest

    limit = manifest_size_limit(data_bytes)
    if len(raw) > limit:
        raise CifarlensError(f"bad manifest {where}: {len(raw)} bytes, more than a manifest of "
                             f"these data files can have ({limit})")
    import json

    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise CifarlensError(f"bad manifest {where}: not JSON ({type(e).__name__})") from None
    return validate_manifest(obj, where, dataset=name)


def _data_files(spec: dict) -> list[str]:
    return [spec["meta"], *spec["train"], *spec["test"]]


def _build(name: str, source: str, folder: Path, get: Callable[[str], tuple[bytes, str]],
           where: Callable[[str], str], manifest: dict | None) -> CifarData:
    """Decode verified file bytes into a CifarData, checking every field against the format.

    `get(file)` returns a file's verified bytes and their MD5; it is called once per file, so
    only one raw file is held at a time beside the decoded arrays."""
    spec = dataset_spec(name)
    k = spec["num_classes"]
    meta_bytes, meta_md5 = get(spec["meta"])
    meta = safe_unpickle(meta_bytes, where(spec["meta"]))
    # The data's identity by content (MD5 of every file), recorded by runs at creation.
    md5: dict[str, str] = {spec["meta"]: meta_md5}
    out: dict = {"identity": {"dataset": name, "source": source, "md5": md5}}
    fine_key = b"fine_labels" if name == "cifar100" else b"labels"
    for split in ("train", "test"):
        xs, ys, cs = [], [], []
        for f in spec[split]:
            raw, md5[f] = get(f)
            d = safe_unpickle(raw, where(f))
            x = _images(d, where(f), len(raw))
            del raw
            xs.append(x)
            ys.append(_labels(d, fine_key, len(x), k, where(f)))
            if name == "cifar100":
                cs.append(_labels(d, b"coarse_labels", len(x), 20, where(f)))
            del d
        out[f"{split}_x"] = np.concatenate(xs)
        out[f"{split}_y"] = np.concatenate(ys)
        if cs:
            out[f"{split}_coarse"] = np.concatenate(cs)
    extra: dict = {}
    if manifest is not None:
        sizes = manifest["sizes"]
        got = {"train": len(out["train_y"]), "test": len(out["test_y"])}
        if got != sizes:
            raise CifarlensError(f"bad manifest {where(SYNTH_MANIFEST)}: it lists {sizes['train']} "
                                 f"train / {sizes['test']} test images, the data files hold "
                                 f"{got['train']} / {got['test']}")
        extra["manifest"] = manifest
    if name == "cifar100":
        class_names = _names(meta, b"fine_label_names", 100, where(spec["meta"]), len(meta_bytes))
        coarse_names = _names(meta, b"coarse_label_names", 20, where(spec["meta"]),
                              len(meta_bytes))
        f2c = _fine_to_coarse(out, class_names, coarse_names, str(folder))
        return CifarData(name, source, folder, class_names=class_names, coarse_names=coarse_names,
                         fine_to_coarse=f2c, extra=extra, **out)
    class_names = _names(meta, b"label_names", 10, where(spec["meta"]), len(meta_bytes))
    return CifarData(name, source, folder, class_names=class_names, extra=extra, **out)


def _fine_to_coarse(out: dict, fine_names: list[str], coarse_names: list[str], where: str
                    ) -> np.ndarray:
    """The fine->coarse table, refusing a fine class labelled with two coarse classes (in either
    split) or coarse labels that do not form one group per coarse name (20 for CIFAR-100)."""
    k, kc = len(fine_names), len(coarse_names)
    missing = np.flatnonzero(np.bincount(out["train_y"], minlength=k) == 0).tolist()
    if missing:
        raise CifarlensError(f"{where}: fine classes {_classes(missing, fine_names)} have no "
                             "training images")
    fine = np.concatenate([out["train_y"], out["test_y"]])
    coarse = np.concatenate([out["train_coarse"], out["test_coarse"]])
    pairs = np.unique(fine * kc + coarse)
    f_of, c_of = pairs // kc, pairs % kc
    counts = np.bincount(f_of, minlength=k)
    if (counts > 1).any():
        c = int(np.flatnonzero(counts > 1)[0])
        both = c_of[f_of == c].tolist()
        raise CifarlensError(
            f"{where}: inconsistent coarse labels: fine class {_classes([c], fine_names)} is "
            f"labelled coarse {_classes(both, coarse_names)} ({int((counts > 1).sum())} fine "
            "classes with more than one coarse class)")
    f2c = np.empty(k, dtype=np.int64)
    f2c[f_of] = c_of
    unused = sorted(set(range(kc)) - set(f2c.tolist()))
    if unused:
        raise CifarlensError(f"{where}: coarse labels form {kc - len(unused)} groups, need {kc}: "
                             f"coarse classes {_classes(unused, coarse_names)} have no fine class")
    return f2c


def _classes(ids: list[int], names: list[str]) -> str:
    shown = [f"{i} ({names[i][:40]})" for i in ids[:5]]
    return ", ".join(shown) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def read_folder(folder: Path, name: str) -> CifarData:
    """Read an extracted official-format folder, verifying every file before unpickling it."""
    from ._io import read_bytes

    spec = dataset_spec(name)
    folder = Path(folder).absolute()
    names = _data_files(spec)
    sizes = {}
    for f in names:
        try:
            sizes[f] = (folder / f).stat().st_size
        except FileNotFoundError:
            raise CifarlensError(f"missing data file {folder / f}") from None
        except OSError as e:
            raise CifarlensError(f"cannot read data file {folder / f}: {e.strerror or e}") from None
    manifest = None
    if (folder / USER_MANIFEST).exists() and not (folder / SYNTH_MANIFEST).exists():
        raise CifarlensError(f"{folder} holds your own data (registered, {USER_MANIFEST}), not "
                             f"the official {name}: read it with --dataset user")
    if (folder / SYNTH_MANIFEST).exists():
        raw = read_bytes(folder / SYNTH_MANIFEST, "manifest")
        manifest = parse_manifest(raw, str(folder / SYNTH_MANIFEST), name, sum(sizes.values()))
        md5s, source = manifest["md5"], "generated"
    else:
        md5s, source = spec["md5"], "official"

    def get(f: str) -> tuple[bytes, str]:
        raw = read_bytes(folder / f, "data file")
        return raw, _check_md5(raw, f, md5s, str(folder / f))

    return _build(name, source, folder, get, lambda f: str(folder / f), manifest)


def read_archive_files(archive: Path, name: str) -> tuple[dict[str, bytes], str, dict | None]:
    """The verified files of a dataset archive, read in memory: {name: bytes} (with the raw
    manifest of generated data under its own name), the source, and the parsed manifest.

    An archive is accepted when its MD5 is the official one, or when it is exactly a generated
    dataset: only the dataset folder, its data files and its manifest, regular files only, no
    more bytes than 16 times the archive's size, a valid manifest, and every data file matching
    the manifest's MD5. Anything else is refused before a byte of it is used or written.
    """
    from .download import md5_file, read_members

    spec = dataset_spec(name)
    archive = Path(archive)
    wanted = _data_files(spec)
    official = md5_file(archive) == spec["archive_md5"]
    if official:
        members = read_members(archive, spec["folder"], set(wanted), allowed=None, max_total=None)
        md5s, manifest = spec["md5"], None
    else:
        allowed = {*wanted, SYNTH_MANIFEST}
        limit = 16 * archive.stat().st_size + (1 << 20)
        members = read_members(archive, spec["folder"], allowed, allowed=allowed, max_total=limit,
                               not_verified=f"expected MD5 {spec['archive_md5']}")
        if SYNTH_MANIFEST not in members:
            raise CifarlensError(f"checksum mismatch for {archive}: expected MD5 "
                                 f"{spec['archive_md5']} (and it is not a dataset cifarlens "
                                 "generated: no manifest); delete it and download again")
        data_bytes = sum(len(members.get(f, b"")) for f in wanted)
        manifest = parse_manifest(members[SYNTH_MANIFEST], f"{archive} ({SYNTH_MANIFEST})",
                                  name, data_bytes)
        md5s = manifest["md5"]
    for f in wanted:
        if f not in members:
            raise CifarlensError(f"{archive} has no {spec['folder']}/{f}")
        _check_md5(members[f], f, md5s, f"{archive} (member {spec['folder']}/{f})")
    return members, ("official" if official else "generated"), manifest


def read_archive(archive: Path, name: str) -> CifarData:
    """Read a dataset straight from its archive, in memory: nothing is extracted or written."""
    spec = dataset_spec(name)
    archive = Path(archive).absolute()
    files, source, manifest = read_archive_files(archive, name)

    def get(f: str) -> tuple[bytes, str]:  # verified by read_archive_files
        raw = files.pop(f)
        return raw, md5_bytes(raw)

    data = _build(name, source, archive.parent / spec["folder"], get,
                  lambda f: f"{archive} (member {spec['folder']}/{f})", manifest)
    data.extra["archive"] = archive
    return data


def locate(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
           progress: bool = True) -> Path:
    """The dataset's extracted folder under `data_dir` (absolute).

    With `download` (the caller asked to prepare the data), a missing archive is downloaded and
    a missing folder is extracted from the verified archive: into a fresh temp folder, renamed
    into place only once every file verified, never over anything that exists. Without it
    nothing is written: a folder that is not there is an error (`load_dataset` then reads the
    archive in memory).
    """
    if name == USER:  # the user's own data is found, never downloaded
        from .userdata import locate_user

        return locate_user(data_dir)
    spec = dataset_spec(name)
    root = default_data_dir(data_dir)
    if root.name == spec["folder"] and root.is_dir():  # pointed straight at the folder
        return root
    folder = root / spec["folder"]
    if folder.is_dir():
        return folder
    archive = root / spec["archive"]
    if not download:
        if archive.is_file():
            raise CifarlensError(f"{name} in {root} is not extracted (only {spec['archive']}); "
                                 f"`cifarlens data download --data-dir {root}` extracts it")
        raise CifarlensError(f"{name} not found in {root}: put {spec['archive']} or the extracted "
                             f"{spec['folder']}/ folder there, or allow downloading")
    from .data_guess import clean_on_failure, refuse_other_dataset
    from .download import fetch, install_folder

    if not archive.exists():
        refuse_other_dataset(root, name)  # a mistyped --dataset or --data-dir: no download
        with clean_on_failure(root):
            fetch(spec["url"], archive, spec["archive_md5"], progress=progress)
    files, _, _ = read_archive_files(archive, name)
    install_folder(root, spec["folder"], files)
    return folder


def load_dataset(name: str = "cifar100", data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, progress: bool = True) -> CifarData:
    """Read a dataset, verified. Only with `download` may the data folder be written to.

    Read once per process: the verified data of the last CACHE_SIZE datasets is kept, keyed on
    the dataset, the resolved path and the size, mtime and inode of every file read. A later
    call re-reads and re-verifies only when one of those changed (or was written so shortly
    before it was read that an in-place change could keep them equal, see `_DataCache`). The
    arrays are shared between the calls that get them: treat them as read-only.
    """
    if name == USER:
        from .userdata import locate_user, read_user

        folder = locate_user(data_dir)
        return _CACHE.get(name, folder, lambda: read_user(folder), _user_files)
    if download:
        folder = locate(name, data_dir, download=True, progress=progress)
        return _CACHE.get(name, folder, lambda: read_folder(folder, name), _folder_files)
    spec = dataset_spec(name)
    root = default_data_dir(data_dir)
    if root.name == spec["folder"] and root.is_dir():
        folder = root
    elif (root / spec["folder"]).is_dir():
        folder = root / spec["folder"]
    elif (root / spec["archive"]).is_file():
        archive = root / spec["archive"]
        return _CACHE.get(name, archive, lambda: read_archive(archive, name), lambda p, n: [p])
    else:
        raise CifarlensError(f"{name} not found in {root}: put {spec['archive']} or the extracted "
                             f"{spec['folder']}/ folder there, or allow downloading")
    return _CACHE.get(name, folder, lambda: read_folder(folder, name), _folder_files)


def _folder_files(folder: Path, name: str) -> list[Path]:
    return [folder / f for f in (*_data_files(dataset_spec(name)), SYNTH_MANIFEST)]


def _user_files(folder: Path, name: str) -> list[Path]:
    from .userdata import USER_MANIFEST, manifest_files

    return [folder / USER_MANIFEST, *(folder / f for f in manifest_files(folder))]


CACHE_SIZE = 2  # a study reads one dataset; two let a script alternate between two
# A file written less than this before it was read may change again within the filesystem's
# timestamp granularity (coarse clocks tick every few ms) with its size and mtime unchanged.
RACY_NS = 2_000_000_000


class _DataCache:
    """The verified data of the last few datasets read in this process.

    Keyed on (dataset, resolved path); an entry holds the data and the signature (size,
    mtime_ns, inode; or absent) of every file it was read from. A hit costs one stat per file.
    Like git's racy-index rule, an entry whose files were modified within RACY_NS of the read is
    not trusted: it is read and verified again until its files are old enough.
    """

    def __init__(self) -> None:
        from collections import OrderedDict

        self.entries: OrderedDict = OrderedDict()
        self.enabled = True

    @staticmethod
    def _signature(paths: list[Path]) -> tuple:
        sig = []
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                sig.append((str(p), None))
                continue
            sig.append((str(p), st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(sig)

    def get(self, name: str, path: Path, read: Callable[[], CifarData],
            files: Callable[[Path, str], list[Path]]) -> CifarData:
        if not self.enabled or CACHE_SIZE < 1:
            return read()
        key = (name, str(Path(path).resolve()))
        hit = self.entries.get(key)
        if hit is not None:
            data, sig, read_at = hit
            if self._signature(files(Path(path), name)) == sig and not self._racy(sig, read_at):
                self.entries.move_to_end(key)
                return dataclasses.replace(data, extra=dict(data.extra),
                                           identity=copy.deepcopy(data.identity))
            del self.entries[key]
        before = self._signature(files(Path(path), name))
        read_at = time.time_ns()
        data = read()
        # files that changed while they were read: do not remember what was read
        if self._signature(files(Path(path), name)) == before:
            self.entries[key] = (data, before, read_at)
            while len(self.entries) > CACHE_SIZE:
                self.entries.popitem(last=False)
        return data

    @staticmethod
    def _racy(sig: tuple, read_at: int) -> bool:
        return any(len(s) > 2 and s[2] >= read_at - RACY_NS for s in sig)

    def clear(self) -> None:
        self.entries.clear()


_CACHE = _DataCache()


def clear_cache() -> None:
    """Forget every dataset read so far in this process (the next load reads and verifies)."""
    _CACHE.clear()


# --- split and normalization -------------------------------------------------------------------


def stratified_split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded shuffle; round(val_fraction * n_c) of each class go to val. Sorted indices."""
    if not 0.0 < val_fraction < 1.0:
        raise CifarlensError(f"val fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        nv = int(round(val_fraction * len(idx)))
        val.append(idx[:nv])
        train.append(idx[nv:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_subset(labels: np.ndarray, indices: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly n of `indices` (all of them if n >= their number), seeded and class-balanced.

    Every class keeps at least one image and the rest is shared in proportion to the class
    sizes (largest remainders, ties broken by the seed), so no class is dropped and the count is
    what was asked for. n below one image per class is refused: the subset could not be
    stratified.
    """
    indices = np.asarray(indices)
    if n <= 0:
        raise CifarlensError(f"--train-limit must be positive, got {n}")
    if n >= len(indices):
        return indices
    rng = np.random.default_rng([seed, 7919])
    classes, inverse, sizes = np.unique(labels[indices], return_inverse=True, return_counts=True)
    k = len(classes)
    if n < k:
        raise CifarlensError(f"--train-limit {n} is below one image per class: the training split "
                             f"has {k} classes, so use at least {k}")
    # One image per class, then the remaining n - k by largest remainder over the other images.
    spare, rest = sizes - 1, n - k
    share = rest * spare / spare.sum()
    quota = np.floor(share).astype(np.int64)
    left = rest - int(quota.sum())
    if left:
        order = np.lexsort((rng.permutation(k), -(share - quota)))  # biggest remainder first
        quota[order[:left]] += 1
    quota += 1
    keep = []
    for c in range(k):
        idx = indices[inverse == c]
        keep.append(idx[rng.permutation(len(idx))[:quota[c]]])
    return np.sort(np.concatenate(keep))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale (computed in float64 for exactness).

    Refuses images whose colour channel is (nearly) constant: normalizing divides by the std, so
    training on them would blow up and end in a misleading "diverged ... lower --lr".
    """
    if len(images) == 0:
        raise CifarlensError("cannot compute normalization statistics: no training images")
    x = images.astype(np.float64) / 255.0
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    for c, s in enumerate(std):
        # 1e-3 is a quarter of one grey level: such a channel carries no usable signal, and
        # normalizing would scale its stray pixels by more than 1000.
        if not s >= 1e-3:
            name = ("red", "green", "blue")[c] if len(std) == 3 else str(c)
            ch = images[:, c]
            kind = "constant" if ch.min() == ch.max() else "nearly constant"
            raise CifarlensError(
                f"colour channel {c} ({name}) is {kind} over the {len(images)} training images "
                f"(value {255 * mean[c]:.1f}/255, std {255 * s:.2g} grey levels): it cannot be "
                "normalized; the dataset is not usable as CIFAR images")
    return mean.tolist(), std.tolist()


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return ((x_uint8.to(dtype) / 255.0) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


# --- batching and augmentation (batched tensor ops on the training device) ----------------------

# The augmentations live in augment.py; re-exported here, where Batches applies them.
from .augment import AUGMENTS, MIXING, random_crop, random_flip  # noqa: E402, F401


class Batches:
    """Epochs of seeded, shuffled, augmented, normalized batches from a uint8 tensor on `device`.

    The permutation and augmentation draws come from a CPU generator seeded by (seed, epoch), so
    an epoch is the same whether the run was resumed or not. The last incomplete batch is dropped
    (a different random remainder each epoch) so every step sees the same batch size.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std, *,
                 device: torch.device, augment: str = "none", seed: int = 0,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 num_classes: int | None = None, cutout_size: int = 8, mixup_alpha: float = 1.0,
                 cutmix_alpha: float = 1.0):
        if augment not in AUGMENTS:
            raise CifarlensError(f"unknown augment {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if augment in MIXING and not num_classes:
            raise CifarlensError(f"augment {augment} mixes labels: Batches needs num_classes")
        self.num_classes, self.cutout_size = num_classes, cutout_size
        self.alpha = mixup_alpha if augment == "mixup" else cutmix_alpha
        self.x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size = min(batch_size, len(self.x))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.device, self.augment, self.seed = device, augment, seed
        self.dtype, self.channels_last = dtype, channels_last

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def epoch(self, epoch: int):
        """Batches of (normalized images, labels): int64 labels, or for mixup/cutmix float soft
        targets (batch, num_classes). Draw order: permutation, crop/flip, then the method's own
        draws, so every augment sees the same batches as `none` and the same crops as
        `crop-flip` (existing runs' numbers do not change)."""
        from . import augment as A

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n, steps, bs = len(self.x), len(self), self.batch_size
        perm = torch.randperm(n, generator=g)
        if self.augment != "none":
            dx = torch.randint(0, 9, (n,), generator=g).to(self.device)
            dy = torch.randint(0, 9, (n,), generator=g).to(self.device)
            flip = (torch.rand(n, generator=g) < 0.5).to(self.device)
        h, w = self.x.shape[-2:]
        if self.augment == "cutout":  # one square centre per image
            cy = torch.randint(0, h, (n,), generator=g).to(self.device)
            cx = torch.randint(0, w, (n,), generator=g).to(self.device)
        elif self.augment in A.MIXING:  # per batch: partners, lam (and a box centre for cutmix)
            partners = torch.argsort(torch.rand(steps, bs, generator=g), dim=1).to(self.device)
            lams = A.beta_draws(g, self.alpha, steps)
            centres = torch.stack([torch.randint(0, h, (steps,), generator=g),
                                   torch.randint(0, w, (steps,), generator=g)], 1).tolist()
        perm = perm.to(self.device)
        for i in range(steps):
            sel = perm[i * bs:(i + 1) * bs]
            xb, yb = self.x[sel], self.y[sel]
            if self.augment != "none":
                xb = random_flip(random_crop(xb, dx[sel], dy[sel]), flip[sel])
            xb = normalize(xb, self.mean, self.std, self.dtype)
            if self.augment == "cutout":
                xb = A.cutout(xb, cy[sel], cx[sel], self.cutout_size)
            elif self.augment == "mixup":
                lam = float(lams[i])
                xb, yb = A.mixup(xb, partners[i], lam), A.mixed_targets(
                    yb, partners[i], lam, self.num_classes)
            elif self.augment == "cutmix":
                box = A.cutmix_box(h, w, float(lams[i]), *centres[i])
                xb, lam = A.cutmix(xb, partners[i], box)
                yb = A.mixed_targets(yb, partners[i], lam, self.num_classes)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
