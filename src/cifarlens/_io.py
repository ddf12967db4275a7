"""Atomic file output and run-folder locks.

Every artifact is written to a temp file in the same folder, flushed, fsynced and renamed, so a
crash or a full disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from cifarlens.errors import CifarlensError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
    except OSError as e:
        raise CifarlensError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            msg = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise CifarlensError(f"cannot write {path}: {msg}") from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """A file's bytes, or a one-line CifarlensError naming `what` is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CifarlensError(f"missing {what} {path}") from None
    except OSError as e:
        raise CifarlensError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CifarlensError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CifarlensError(f"corrupt JSON file {path}: {e}") from None


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


# Lock files this process holds, with how many RunLocks hold each: a stage that runs inside
# another (study -> evaluate) takes the same folder's lock again without refusing itself.
_HELD: dict[Path, int] = {}
# Owners ("host pid") whose locks this process works under: the study's analysis worker runs
# a stage in a folder its parent holds, so no other command slips in between the run's
# training and its analysis (issue 20).
_ADOPTED: set[str] = set()


def lock_owner() -> str:
    """This process as a lock file names it."""
    return f"{socket.gethostname()} {os.getpid()}"


def adopt_locks_of(owner: str) -> None:
    """Work under the locks that `owner` (another process's `lock_owner()`) holds: a RunLock on
    such a folder is granted without taking the file, and leaves it to its owner."""
    _ADOPTED.add(owner)


class RunLock:
    """An exclusive lock on a run or study folder, held through a lock file.

    The file records host and PID; a lock whose process is gone on this host is stale and taken
    over, so a killed run never blocks the next one. Within one process the lock is re-entrant.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._held = False

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # e.g. under a regular file, read-only, or a name too long
            raise CifarlensError(f"cannot create {self.path.parent}: {e.strerror or e}") from None
        key = self.path.resolve()
        if _HELD.get(key):
            _HELD[key] += 1
            self._held = True
            return self
        me = lock_owner()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _ADOPTED and self._owner() in _ADOPTED:
                    return self  # our parent's lock: not ours to take or remove
                if self._is_stale():
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                owner = self._owner() or "another process"
                raise CifarlensError(
                    f"{self.path.parent} is in use by {owner} (lock {self.path}); "
                    "wait for it to finish or remove the lock if that process is gone"
                ) from None
            except OSError as e:
                raise CifarlensError(f"cannot lock {self.path.parent}: {e.strerror or e}") from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(me + "\n")
            except OSError as e:  # a full disk: no empty lock left behind, and say where
                with contextlib.suppress(OSError):
                    self.path.unlink()
                msg = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
                raise CifarlensError(f"cannot write lock {self.path}: {msg}") from None
            _HELD[key] = 1
            self._held = True
            return self
        raise CifarlensError(f"cannot lock {self.path.parent}")

    def _owner(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def _is_stale(self) -> bool:
        owner = self._owner()
        if owner is None:
            return True
        try:
            host, pid_s = owner.rsplit(" ", 1)
            pid = int(pid_s)
        except ValueError:
            return True
        if host != socket.gethostname():
            return False  # cannot tell for another host: be safe
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        if self._held:
            key = self.path.resolve()
            _HELD[key] = _HELD.get(key, 1) - 1
            if _HELD[key] <= 0:
                _HELD.pop(key, None)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


F = TypeVar("F")


def locked(fn: F) -> F:
    """Run `fn(folder, ...)` holding `folder`'s lock: every command that writes into a run or
    study folder refuses (naming the owner) while another process works in it."""

    @functools.wraps(fn)  # type: ignore[arg-type]
    def wrapper(folder: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        if not Path(folder).is_dir():
            return fn(folder, *args, **kwargs)  # let the stage say what is missing
        with RunLock(folder):
            return fn(folder, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
