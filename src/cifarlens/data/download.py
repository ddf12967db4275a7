"""Verified, resumable downloads and safe archive extraction.

A download goes to a hidden ``.<name>.part`` file beside the destination and is renamed into
place only when complete and its MD5 matches, so the final name never holds a partial or wrong
file. Transient failures are retried, resuming with an HTTP Range request where the server
allows it. Every user-facing failure is a one-line :class:`CifarlensError` that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import IO, Any

from cifarlens.errors import CifarlensError

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_USER_AGENT = "cifarlens (python urllib)"


def md5_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks so large archives need little memory."""
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
    except FileNotFoundError:
        raise CifarlensError(f"missing file: {path}") from None
    except OSError as e:
        raise CifarlensError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


class _Transient(Exception):
    """A failure worth retrying (dropped connection, short body, timeout, server error)."""


class _Fatal(Exception):
    """A failure retrying cannot fix (unreachable host, 404, ...): give up at once."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(e: BaseException) -> str:
    """A short, one-line description of a network failure."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {one_line(e.reason)}".strip()
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return one_line(e.reason) or "URL error"
        e = e.reason
    if isinstance(e, TimeoutError):  # socket.timeout is an alias
        return "timed out"
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed in the middle of the file"
    if isinstance(e, OSError) and e.strerror:
        return one_line(e.strerror)
    return one_line(e) or type(e).__name__


def _fatal_url_error(e: urllib.error.URLError) -> bool:
    """No DNS, refused or no route (offline, host down) or a bad URL: retrying won't help."""
    r = e.reason
    if isinstance(r, str | socket.gaierror | ConnectionRefusedError):
        return True
    return isinstance(r, OSError) and r.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def fetch(
    url: str,
    dest: Path,
    md5: str,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
) -> Path:
    """Download `url` to `dest`, verifying its MD5; return `dest`.

    Returns at once if `dest` already has the right MD5. Retries dropped connections, short
    bodies and timeouts up to `retries` times (waiting backoff, 2*backoff, ... seconds),
    resuming with a Range request when the server supports it.
    """
    dest = Path(dest)
    md5 = md5.strip().lower()
    if not _MD5_RE.match(md5):
        raise CifarlensError(f"bad MD5 {md5!r} for {url}: need 32 hex digits")
    existing = None
    if dest.exists():
        existing = md5_file(dest, chunk_size)
        if existing == md5:
            return dest
    part = dest.with_name("." + dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CifarlensError(f"cannot create {dest.parent}: {e.strerror or e}") from None

    def give_up(reason: str) -> CifarlensError:
        stale = f"; the existing {dest.name} has MD5 {existing}" if existing else ""
        return CifarlensError(
            f"cannot download {url} ({reason}){stale}; place {dest.name} in {dest.parent} "
            f"by hand (MD5 {md5}) and run again"
        )

    bar = _progress_bar(dest.name, progress)
    try:
        # A stale .part from an earlier run may come from another source: start clean.
        _unlink(part)
        with open(part, "w+b") as out:
            hasher = hashlib.md5(usedforsecurity=False)
            attempt = 0
            while True:
                try:
                    hasher = _download_once(url, out, hasher, timeout, chunk_size, bar)
                    break
                except _Fatal as e:
                    raise give_up(str(e)) from None
                except _Transient as e:
                    if attempt >= retries:
                        tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                        raise give_up(f"{e}; gave up after {tries}") from None
                    time.sleep(backoff * 2**attempt)
                    attempt += 1
            got = hasher.hexdigest()
            if got != md5:
                out.close()
                _unlink(part)
                raise CifarlensError(
                    f"checksum mismatch for {url}: expected MD5 {md5}, got {got}; "
                    f"the downloaded file was deleted (run again, or place {dest.name} in "
                    f"{dest.parent} by hand)"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    except CifarlensError:
        _unlink(part)
        raise
    except OSError as e:  # local disk problems while writing the .part file
        _unlink(part)
        msg = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise CifarlensError(f"cannot write {part}: {msg}") from None
    except BaseException:  # Ctrl-C: no half file left behind
        _unlink(part)
        raise
    finally:
        bar.close()
    return dest


def _download_once(
    url: str, out: IO[bytes], hasher: Any, timeout: float, chunk_size: int, bar: Any
) -> Any:
    """One request: resume from `out`'s current size if possible. Returns the updated hasher.

    Raises _Transient for retryable failures (keeping what was received) and _Fatal otherwise.
    """
    have = out.tell()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if have:
            req.add_header("Range", f"bytes={have}-")
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # our resume offset is no good: start over next time
            _restart(out, bar)
            raise _Transient(_reason(e)) from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(_reason(e)) from None
        raise _Fatal(_reason(e)) from None
    except urllib.error.URLError as e:
        if _fatal_url_error(e):
            raise _Fatal(_reason(e)) from None
        raise _Transient(_reason(e)) from None
    except ValueError as e:  # not a URL at all
        raise _Fatal(one_line(e)) from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, bad status lines
        raise _Transient(_reason(e)) from None

    with resp:
        status = resp.status or 200  # file:// URLs have no status
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if status == 206:
            if not (have and _resumes_at(resp.headers.get("Content-Range"), have)):
                _restart(out, bar)  # a range we did not ask for: start over without one
                raise _Transient("server sent an unexpected byte range")
            total = have + expected if expected is not None else None
        else:
            if have:  # the server ignored our Range: the body starts from byte 0 again
                _restart(out, bar)
                hasher = hashlib.md5(usedforsecurity=False)
                have = 0
            total = expected
        bar.reset(total=total)
        bar.update(have)
        got = 0
        while True:
            try:
                chunk = resp.read(chunk_size)
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                raise _Transient(_reason(e)) from None
            if not chunk:
                break
            out.write(chunk)  # local disk errors propagate as OSError: not retried
            hasher.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))
        if expected is not None and got < expected:
            # http.client returns a short body silently when the server hangs up early.
            raise _Transient(f"connection closed after {have + got} of {total} bytes")
    return hasher


def _resumes_at(content_range: str | None, offset: int) -> bool:
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", content_range or "")
    return bool(m) and int(m.group(1)) == offset


def _restart(out: IO[bytes], bar: Any) -> None:
    out.seek(0)
    out.truncate()
    bar.reset()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _progress_bar(name: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=None,
        desc=f"downloading {name}",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


# --- extraction --------------------------------------------------------------------------------

_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", name)
        or ".." in parts
        or posixpath.isabs(posixpath.normpath(name))
        or "\x00" in name
    ):
        raise CifarlensError(f"refusing to extract {archive}: unsafe path {name!r} in the archive")
    if not (m.isfile() or m.isdir()):
        kind = "link" if (m.issym() or m.islnk()) else "special file"
        raise CifarlensError(f"refusing to extract {archive}: {kind} {name!r} in the archive")


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def read_members(
    archive: Path,
    folder: str,
    wanted: set[str],
    *,
    allowed: set[str] | None,
    max_total: int | None,
    not_verified: str = "",
) -> dict[str, bytes]:
    """Read the regular files `folder/NAME` (NAME in `wanted`) of a tar(.gz) into memory.

    Nothing is written. Every member must be safe (no absolute paths, ``..``, links or devices)
    and inside `folder`; with `allowed`, every member must be `folder` itself or one of
    `folder/NAME` for NAME in `allowed`, and with `max_total` the members may declare no more
    bytes than that in all (checked header by header, before any data is read, so a small
    archive cannot make us decompress gigabytes). `not_verified` says why the archive is being
    checked this strictly (it failed the MD5 check), for the message.
    """
    archive = Path(archive)
    why = f" (it failed verification: {not_verified}, and is not a dataset cifarlens generated)" \
        if not_verified else ""
    out: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                try:
                    _check_member(m, archive)
                except CifarlensError as e:
                    raise CifarlensError(f"{e}{why}") from None
                parts = _parts(m.name)
                rel = "/".join(parts[1:])
                if not parts or parts[0] != folder or (
                    allowed is not None and not (rel in allowed and m.isfile()
                                                 or rel == "" and m.isdir())
                ):
                    raise CifarlensError(
                        f"refusing {archive}: unexpected member {m.name!r}{why}"
                    )
                total += m.size
                if max_total is not None and total > max_total:
                    raise CifarlensError(
                        f"refusing {archive}: its members hold more than {max_total} bytes, "
                        f"far more than the archive's size could{why}"
                    )
                if m.isfile() and rel in wanted:
                    if rel in out:
                        raise CifarlensError(f"refusing {archive}: {m.name!r} appears twice{why}")
                    f = tar.extractfile(m)
                    assert f is not None  # noqa: S101 - a regular file always has data
                    out[rel] = f.read()
    except _CORRUPT as e:
        raise CifarlensError(
            f"{archive} is corrupt or truncated ({one_line(e) or type(e).__name__}); delete it "
            "and download it again (or generate it again)"
        ) from None
    except OSError as e:
        raise CifarlensError(f"cannot read {archive}: {e.strerror or e}") from None
    return out


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def install_folder(root: Path, name: str, files: dict[str, bytes], *, replace: bool = False) -> Path:
    """Write `files` into a fresh temp folder inside `root`, then rename it to ``root/name``.

    A crash leaves either no ``root/name`` or a complete one (and a hidden ``.cifarlens-*`` temp
    folder). An existing ``root/name`` is never replaced unless `replace` says the caller has
    established it is its own; even then it is moved aside first and deleted only once the new
    folder is in place (and put back if that rename fails).
    """
    root = Path(root)
    target = root / name
    if _exists(target) and not replace:
        raise CifarlensError(f"{target} already exists; not replacing it")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".cifarlens-", dir=root))
    except OSError as e:
        raise CifarlensError(f"cannot write into {root}: {e.strerror or e}") from None
    try:
        new = tmp / name
        new.mkdir()
        for fname, data in files.items():
            with open(new / fname, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        old = None
        if _exists(target):
            if not replace:
                raise CifarlensError(f"{target} appeared meanwhile; not replacing it")
            old = tmp / (".old-" + name)
            os.rename(target, old)
        try:
            os.rename(new, target)  # a non-empty folder there (a race) makes this fail
        except OSError:
            if old is not None:
                os.rename(old, target)
            raise
    except OSError as e:
        msg = "disk full" if e.errno == errno.ENOSPC else one_line(e.strerror or e)
        raise CifarlensError(f"cannot write {target}: {msg}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def safe_extract(archive: Path, dest_dir: Path) -> list[str]:
    """Extract a tar(.gz) into `dest_dir` (like ``tar -C dest_dir -xf archive``), safely; return
    the top-level names it created.

    Every member is checked first (no absolute paths, no ``..``, no links or device files) and
    the archive is read to its end, so a truncated download fails before anything is written.
    Members are extracted into a temp folder inside `dest_dir`; each top-level entry is then
    renamed into place. Nothing that exists is replaced: if any top-level name is taken, nothing
    is moved at all. This function does not verify content: callers verify first (the dataset
    code reads verified members with `read_members` and installs them with `install_folder`).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise CifarlensError(f"missing archive: {archive}")
    bad = (
        f"{archive} is corrupt or truncated ({{}}); delete it and download it again "
        "(or generate it again)"
    )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".cifarlens-extract-", dir=dest_dir))
    except OSError as e:
        raise CifarlensError(f"cannot extract into {dest_dir}: {e.strerror or e}") from None
    done: list[str] = []
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()  # reads the whole stream: catches truncation early
                if not members:
                    raise CifarlensError(bad.format("no files in it"))
                for m in members:
                    _check_member(m, archive)
                tops = sorted({_top(m.name) for m in members} - {"", "."})
                taken = [t for t in tops if _exists(dest_dir / t)]
                if taken:
                    raise CifarlensError(
                        f"not extracting {archive}: {dest_dir / taken[0]} already exists "
                        "(nothing is replaced)"
                    )
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    tar.extractall(tmp, members=members, filter="data")
                else:  # our own member checks above are the guard here
                    tar.extractall(tmp, members=members)  # noqa: S202
        except _CORRUPT as e:
            if isinstance(e, getattr(tarfile, "FilterError", ())):  # Python >= 3.11.4
                raise CifarlensError(f"refusing to extract {archive}: {one_line(e)}") from None
            raise CifarlensError(bad.format(one_line(e) or type(e).__name__)) from None
        except OSError as e:
            msg = "disk full" if e.errno == errno.ENOSPC else one_line(e.strerror or e)
            raise CifarlensError(f"cannot extract {archive} into {dest_dir}: {msg}") from None
        for name in tops:
            src, target = tmp / name, dest_dir / name
            if src.is_dir():
                os.rename(src, target)  # fails over a non-empty folder: never replaces one
            else:
                os.link(src, target)  # fails if the name exists (a race): never replaces
            done.append(name)
    except OSError as e:
        raise CifarlensError(
            f"cannot extract {archive} into {dest_dir}: {e.strerror or e}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done


def _top(name: str) -> str:
    parts = _parts(name)
    return parts[0] if parts else ""
