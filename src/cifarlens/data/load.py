"""Finding a dataset on disk (or downloading it when asked) and reading it once per process.

Reading never writes: `load_dataset(..., download=False)` reads an extracted folder, or the
members of a verified archive in memory. Only a caller that asks to prepare the data
(`download=True`) writes, and then only new names.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from cifarlens.data import download as dl  # dl.fetch: one place a test stands in for the network
from cifarlens.data.dataset import (
    CifarData,
    data_files,
    read_archive,
    read_archive_files,
    read_folder,
)
from cifarlens.data.guess import clean_on_failure, refuse_other_dataset
from cifarlens.data.registry import (
    SYNTH_MANIFEST,
    USER,
    USER_MANIFEST,
    dataset_spec,
    default_data_dir,
)
from cifarlens.data.userdata import locate_user, manifest_files, read_user
from cifarlens.errors import CifarlensError

# --- batching and augmentation (batched tensor ops on the training device) ----------------------


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

    if not archive.exists():
        refuse_other_dataset(root, name)  # a mistyped --dataset or --data-dir: no download
        with clean_on_failure(root):
            dl.fetch(spec["url"], archive, spec["archive_md5"], progress=progress)
    files, _, _ = read_archive_files(archive, name)
    dl.install_folder(root, spec["folder"], files)
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
    return [folder / f for f in (*data_files(dataset_spec(name)), SYNTH_MANIFEST)]


def _user_files(folder: Path, name: str) -> list[Path]:

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
