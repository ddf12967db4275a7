"""The CIFAR python format, read without running code: checksums, an opcode scan, a
restricted unpickler, and the format's fields (images, labels, names) checked against the bytes.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import struct
from typing import Any

import numpy as np

from cifarlens.data.registry import IMAGE_SIZE
from cifarlens.errors import CifarlensError

# --- batching and augmentation (batched tensor ops on the training device) ----------------------

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


def check_md5(data: bytes, name: str, md5s: dict[str, str], where: str) -> str:
    """The file's MD5, once it matched the expected one."""
    want = md5s.get(name)
    got = md5_bytes(data)
    if want is None or got != want:
        raise CifarlensError(f"checksum mismatch for {where}: expected MD5 {want}, got {got}; "
                             "the file is corrupt or was modified (delete it and download again)")
    return got


def read_images(d: dict, source: str, file_bytes: int, side: int = 32) -> np.ndarray:
    x = d.get(b"data")
    row = 3 * side * side
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != row:
        raise CifarlensError(f"bad image array in {source}: need uint8 (N, {row}) "
                             f"({side}x{side} RGB rows)")
    if x.nbytes > file_bytes:  # unreachable through the guarded unpickler; kept as the rule
        raise CifarlensError(f"{source} declares {len(x)} images ({x.nbytes} bytes) but holds "
                             f"only {file_bytes} bytes")
    return x.reshape(-1, 3, side, side)


def read_labels(d: dict, key: bytes, n: int, k: int, source: str) -> np.ndarray:
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


def read_names(d: dict, key: bytes, k: int, source: str, file_bytes: int) -> list[str]:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != k or not all(isinstance(s, bytes | str) for s in v):
        raise CifarlensError(f"bad {key.decode()} in {source}: need {k} names")
    # One long name referenced k times costs k copies once decoded: names must fit in the file.
    if sum(len(s) for s in v) > file_bytes:
        raise CifarlensError(f"bad {key.decode()} in {source}: the names are longer than the file")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in v]


# --- writing the format (generated and imported data) ---


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """HWC uint8 images -> official (N, 3072) rows: 1024 R, then G, then B, row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def from_cifar_rows(data: np.ndarray) -> np.ndarray:
    """Official (N, 3072) rows -> HWC uint8 images (N, 32, 32, 3)."""
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)


def dump_pickle(obj: dict[bytes, Any]) -> bytes:
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=2)  # the protocol of the official files
    return buf.getvalue()
