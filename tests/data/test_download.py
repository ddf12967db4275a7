"""fetch() against a real, misbehaving HTTP server on 127.0.0.1, and safe_extract()."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cifarlens.data.download import fetch, md5_file, safe_extract
from cifarlens.data.synth import read_synth_info, write_synthetic
from cifarlens.errors import CifarlensError

# ------------------------------------------------------------------------------------------------
# A tiny configurable server. Only ever bound to 127.0.0.1.


@dataclass
class Behaviour:
    body: bytes = b""
    # ok | wrong | drop_once | drop_always | reset_once | stall_once | chunked_once | status
    mode: str = "ok"
    ranges: bool = True  # honour Range requests with 206
    status: int = 200  # for mode "status"
    requests: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    watch: Path | None = None  # folder listed while a download is stalled half-way
    seen_mid_download: list[str] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour: Behaviour  # set on a per-server subclass

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        b = self.behaviour
        b.requests.append(dict(self.headers))
        n = len(b.requests)
        if b.mode == "status":
            self.send_error(b.status)
            return
        body = b.body if b.mode != "wrong" else b.body[::-1]
        if b.mode == "chunked_once" and n == 1:
            # Chunked encoding cut short: http.client raises IncompleteRead.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(body):x}\r\n".encode() + half)
            self.wfile.flush()
            self.close_connection = True
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and b.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Content-Type", "application/gzip")
        self.end_headers()
        payload = body[start:]
        cut = len(payload) // 2
        failing = b.mode == "drop_always" or (b.mode.endswith("_once") and n == 1)
        if not failing:
            self.wfile.write(payload)
            return
        self.wfile.write(payload[:cut])
        self.wfile.flush()
        if b.mode == "stall_once":
            time.sleep(0.1)  # let the client write what it got
            if b.watch is not None:
                b.seen_mid_download = sorted(p.name for p in b.watch.iterdir())
            b.release.wait(10)  # the client times out meanwhile
        elif b.mode == "reset_once":
            # SO_LINGER 0: close() sends a TCP RST, so the client sees ConnectionResetError.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    handler = type("BoundHandler", (Handler,), {"behaviour": behaviour})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/cifar-100-python.tar.gz", behaviour
    finally:
        behaviour.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, "cifar10", train_per_class=30, test_per_class=5)
    return (out / "cifar-10-python.tar.gz").read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


FAST = {"progress": False, "backoff": 0.0, "timeout": 5.0, "chunk_size": 4096}

# ------------------------------------------------------------------------------------------------


def test_fetch_ok(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body = archive
    dest = tmp_path / "data" / "cifar-10-python.tar.gz"  # parent created on demand
    assert fetch(url, dest, md5(archive), **FAST) == dest
    assert dest.read_bytes() == archive
    assert leftovers(dest.parent) == [dest.name]
    assert len(b.requests) == 1 and "Range" not in b.requests[0]


def test_fetch_progress_bar(server, archive: bytes, tmp_path: Path, capsys) -> None:
    url, b = server
    b.body = archive
    dest = tmp_path / "a.tar.gz"
    fetch(url, dest, md5(archive).upper(), **{**FAST, "progress": True})
    assert md5_file(dest) == md5(archive)
    assert "downloading a.tar.gz" in capsys.readouterr().err


def test_existing_file_with_right_md5_skips_network(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(archive)
    assert fetch(url, dest, md5(archive), **FAST) == dest
    assert b.requests == []


def test_existing_file_with_wrong_md5_is_replaced(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body = archive
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"junk")
    fetch(url, dest, md5(archive), **FAST)
    assert dest.read_bytes() == archive


def test_checksum_mismatch_deletes_download(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body, b.mode = archive, "wrong"
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(CifarlensError) as e:
        fetch(url, dest, md5(archive), **FAST)
    msg = str(e.value)
    assert "checksum mismatch" in msg and md5(archive) in msg and md5(archive[::-1]) in msg
    assert "deleted" in msg and "\n" not in msg
    assert leftovers(tmp_path) == []
    assert len(b.requests) == 1  # a wrong file is not a transient failure


@pytest.mark.parametrize("mode", ["drop_once", "reset_once"])
def test_dropped_connection_resumes_with_range(
    server, archive: bytes, tmp_path: Path, mode: str
) -> None:
    url, b = server
    b.body, b.mode = archive, mode
    dest = tmp_path / "a.tar.gz"
    fetch(url, dest, md5(archive), **FAST)
    assert md5_file(dest) == md5(archive)
    assert leftovers(tmp_path) == [dest.name]
    assert len(b.requests) == 2
    assert "Range" not in b.requests[0]
    start = int(b.requests[1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= len(archive) // 2


def test_dropped_connection_restarts_without_range_support(
    server, archive: bytes, tmp_path: Path
) -> None:
    url, b = server
    b.body, b.mode, b.ranges = archive, "drop_once", False
    dest = tmp_path / "a.tar.gz"
    fetch(url, dest, md5(archive), **FAST)
    assert dest.read_bytes() == archive  # the 200 body was not appended to the partial one
    assert len(b.requests) == 2


def test_read_timeout_is_retried(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body, b.mode, b.watch = archive, "stall_once", tmp_path
    dest = tmp_path / "a.tar.gz"
    t = time.perf_counter()
    fetch(url, dest, md5(archive), **{**FAST, "timeout": 0.5})
    assert time.perf_counter() - t < 5
    assert md5_file(dest) == md5(archive) and len(b.requests) == 2
    # Half-way through, only the hidden .part file existed, never the final name.
    assert b.seen_mid_download == [".a.tar.gz.part"]


def test_chunked_body_cut_short_is_retried(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body, b.mode = archive, "chunked_once"
    dest = tmp_path / "a.tar.gz"
    fetch(url, dest, md5(archive), **FAST)
    assert dest.read_bytes() == archive and len(b.requests) == 2


def test_always_dropping_gives_up(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body, b.mode = archive, "drop_always"
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(CifarlensError) as e:
        fetch(url, dest, md5(archive), **{**FAST, "retries": 2})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot download {url} (")
    assert "3 attempts" in msg and "by hand" in msg and md5(archive) in msg and str(tmp_path) in msg
    assert len(b.requests) == 3
    assert leftovers(tmp_path) == []


def test_backoff_between_retries(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body, b.mode = archive, "drop_always"
    t = time.perf_counter()
    with pytest.raises(CifarlensError):
        fetch(url, tmp_path / "a", md5(archive), **{**FAST, "retries": 2, "backoff": 0.1})
    assert time.perf_counter() - t >= 0.1 + 0.2


def test_http_404_fails_at_once(server, tmp_path: Path) -> None:
    url, b = server
    b.mode, b.status = "status", 404
    with pytest.raises(CifarlensError, match=r"HTTP 404.*by hand"):
        fetch(url, tmp_path / "a.tar.gz", "0" * 32, **FAST)
    assert len(b.requests) == 1 and leftovers(tmp_path) == []


def test_http_503_is_retried(server, tmp_path: Path) -> None:
    url, b = server
    b.mode, b.status = "status", 503
    with pytest.raises(CifarlensError, match="HTTP 503"):
        fetch(url, tmp_path / "a.tar.gz", "0" * 32, **{**FAST, "retries": 1})
    assert len(b.requests) == 2


def test_unreachable_port_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "cifar-100-python.tar.gz"
    t = time.perf_counter()
    with pytest.raises(CifarlensError) as e:
        fetch(f"http://127.0.0.1:{port}/x.tar.gz", dest, "a" * 32, **{**FAST, "backoff": 5.0})
    assert time.perf_counter() - t < 2  # refused: no pointless retries
    msg = str(e.value)
    assert "\n" not in msg and "by hand" in msg and "refused" in msg.lower()
    assert f"place cifar-100-python.tar.gz in {tmp_path}" in msg and "a" * 32 in msg
    assert leftovers(tmp_path) == []


def test_stale_part_file_is_ignored(server, archive: bytes, tmp_path: Path) -> None:
    url, b = server
    b.body = archive
    dest = tmp_path / "a.tar.gz"
    (tmp_path / ".a.tar.gz.part").write_bytes(b"left over from another run")
    fetch(url, dest, md5(archive), **FAST)
    assert dest.read_bytes() == archive and leftovers(tmp_path) == [dest.name]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(CifarlensError, match="bad MD5"):
        fetch("http://127.0.0.1:1/x", tmp_path / "x", "nope", **FAST)
    with pytest.raises(CifarlensError, match="unknown url type.*by hand"):
        fetch("not a url", tmp_path / "x", "0" * 32, **FAST)
    assert leftovers(tmp_path) == []


def test_md5_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10_000)
    assert md5_file(p, chunk_size=333) == md5(b"x" * 10_000)
    with pytest.raises(CifarlensError, match="missing"):
        md5_file(tmp_path / "nope")


# --- safe_extract ---------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extract_synthetic_archive(archive: bytes, tmp_path: Path) -> None:
    src = tmp_path / "cifar-10-python.tar.gz"
    src.write_bytes(archive)
    root = tmp_path / "root"
    safe_extract(src, root)
    assert leftovers(root) == ["cifar-10-batches-py"]
    info = read_synth_info(root / "cifar-10-batches-py")  # verifies every MD5
    assert len(info["md5"]) == 7


@pytest.mark.parametrize("kind", ["folder", "file", "empty folder"])
def test_extract_never_replaces_an_existing_entry(archive: bytes, tmp_path: Path, kind: str) -> None:
    src = tmp_path / "a.tar.gz"
    src.write_bytes(archive)
    old = tmp_path / "cifar-10-batches-py"
    if kind == "file":
        old.write_text("not ours")
    else:
        old.mkdir()
        if kind == "folder":
            (old / "mine").write_text("keep me")
    with pytest.raises(CifarlensError, match="already exists.*nothing is replaced"):
        safe_extract(src, tmp_path)
    if kind == "file":
        assert old.read_text() == "not ours"
    else:
        assert sorted(p.name for p in old.iterdir()) == ([] if kind == "empty folder" else ["mine"])
    assert sorted(leftovers(tmp_path)) == ["a.tar.gz", "cifar-10-batches-py"]  # no temp left


def test_install_folder_writes_whole_and_never_replaces_unless_told(tmp_path: Path) -> None:
    from cifarlens.data.download import install_folder

    root = tmp_path / "root"
    assert install_folder(root, "ds", {"a": b"1", "b": b"22"}) == root / "ds"
    assert {p.name: p.read_bytes() for p in (root / "ds").iterdir()} == {"a": b"1", "b": b"22"}
    with pytest.raises(CifarlensError, match="already exists; not replacing"):
        install_folder(root, "ds", {"a": b"other"})
    assert (root / "ds" / "a").read_bytes() == b"1"
    install_folder(root, "ds", {"c": b"3"}, replace=True)  # the caller says the old one is its own
    assert leftovers(root / "ds") == ["c"] and leftovers(root) == ["ds"]


def test_install_folder_puts_the_old_folder_back_if_the_rename_fails(
    tmp_path: Path, monkeypatch
) -> None:
    import cifarlens.data.download as dl

    root = tmp_path / "root"
    dl.install_folder(root, "ds", {"mine": b"keep me"})
    real_rename, calls = dl.os.rename, []

    def flaky_rename(a, b):  # the second rename (new folder into place) fails
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(dl.os, "rename", flaky_rename)
    with pytest.raises(CifarlensError, match="cannot write .*disk full"):
        dl.install_folder(root, "ds", {"new": b"x"}, replace=True)
    monkeypatch.undo()
    assert (root / "ds" / "mine").read_bytes() == b"keep me"
    assert leftovers(root) == ["ds"]  # the temp folder is gone


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_archive(archive: bytes, tmp_path: Path, keep: float) -> None:
    src = tmp_path / "a.tar.gz"
    src.write_bytes(archive[: int(len(archive) * keep)])
    dest = tmp_path / "out"
    with pytest.raises(CifarlensError, match="corrupt or truncated") as e:
        safe_extract(src, dest)
    assert "\n" not in str(e.value)
    assert leftovers(dest) == []  # nothing extracted, no temp folder left


def test_not_an_archive(tmp_path: Path) -> None:
    src = tmp_path / "a.tar.gz"
    src.write_bytes(b"<html>captive portal</html>" * 20)
    with pytest.raises(CifarlensError, match="corrupt or truncated"):
        safe_extract(src, tmp_path / "out")
    with pytest.raises(CifarlensError, match="missing archive"):
        safe_extract(tmp_path / "nope.tar.gz", tmp_path / "out")


def test_empty_archive(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "a.tar.gz", [])
    with pytest.raises(CifarlensError, match="no files"):
        safe_extract(src, tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["../evil", "cifar-100-python/../../evil", "/tmp/evil-abs", "ok/../../evil"]
)
def test_path_traversal_refused(tmp_path: Path, name: str) -> None:
    src = make_tar(
        tmp_path / "a.tar.gz",
        [(tarfile.TarInfo("cifar-100-python/train"), b"fine"), (tarfile.TarInfo(name), b"evil")],
    )
    dest = tmp_path / "deep" / "out"
    with pytest.raises(CifarlensError, match="refusing to extract.*unsafe path"):
        safe_extract(src, dest)
    assert leftovers(dest) == []  # not even the safe member
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.tar.gz", "deep", "out"]
    assert not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)
def test_links_and_devices_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("cifar-100-python/train")
    info.type = kind
    info.linkname = "/etc/passwd"
    src = make_tar(tmp_path / "a.tar.gz", [(info, None)])
    with pytest.raises(CifarlensError, match="refusing to extract"):
        safe_extract(src, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []
