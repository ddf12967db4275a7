#!/usr/bin/env python
"""How often one 2-run smoke study reads and verifies its data, without and with the in-process
data cache (`cifarlens.data.load_dataset`, issue #9: "read and verified at most once per run").

One process runs `run_study(preset="smoke", seeds=1)` (one baseline and one variant run, each
trained, evaluated, its failures found and explained, then the summary and report) twice on the
same generated CIFAR-100-format data, once with the cache disabled (what every load did before
it existed) and once with it. Counted with wrappers around cifarlens.data: data files read from
disk (`_io.read_bytes` with what="data file"), MD5 computations (`data.md5_bytes`) and the
seconds spent in `read_folder` (read + hash + decode + checks). The data files are aged by 10 s
first: like any real dataset they are older than the cache's 2 s racy window.

  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/data_reads.py \
      --json bench/results/data_reads_cpu.json

With PYTHONPATH at an older checkout's src/ (no cache) it measures that code as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, say, write_json  # noqa: E402

from cifarlens.data import dataset, load, pickles
from cifarlens.data.load import _CACHE, clear_cache
from cifarlens.study.engines.local import LocalEngine


def measure(root: Path, out: Path, cached: bool, epochs: int) -> dict:
    from cifarlens import _io
    from cifarlens.study.run import run_study

    has_cache = hasattr(load, "_CACHE")  # older cifarlens (before the cache): measured as it is
    if has_cache:
        clear_cache()
        _CACHE.enabled = cached
    counts = {"data_file_reads": 0, "bytes_read": 0, "md5": 0, "md5_bytes": 0,
              "read_folder_calls": 0, "read_folder_s": 0.0}
    real_read, real_md5, real_folder = _io.read_bytes, pickles.md5_bytes, load.read_folder

    def read_bytes(path, what="file"):
        b = real_read(path, what)
        if what == "data file":
            counts["data_file_reads"] += 1
            counts["bytes_read"] += len(b)
        return b

    def md5(b):
        counts["md5"] += 1
        counts["md5_bytes"] += len(b)
        return real_md5(b)

    def read_folder(folder, name):
        t = time.perf_counter()
        try:
            return real_folder(folder, name)
        finally:
            counts["read_folder_calls"] += 1
            counts["read_folder_s"] += time.perf_counter() - t

    _io.read_bytes, load.read_folder = read_bytes, read_folder
    pickles.md5_bytes = dataset.md5_bytes = md5
    t0 = time.perf_counter()
    try:
        run_study(out, preset="smoke", seeds=1, engine=LocalEngine(progress=False), log=lambda m: None,
                  overrides={"data_dir": str(root), "device": "cpu", "epochs": epochs})
    finally:
        _io.read_bytes, load.read_folder = real_read, real_folder
        pickles.md5_bytes = dataset.md5_bytes = real_md5
        if has_cache:
            _CACHE.enabled = True
    counts["study_s"] = time.perf_counter() - t0
    counts["cached"] = cached and has_cache
    counts["code"] = "with cache module" if has_cache else "without cache (older cifarlens)"
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=50,
                    help="generated images per class (official CIFAR-100: 500)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    from cifarlens.data.synth import write_synthetic

    tmp = Path(tempfile.mkdtemp(prefix="cifarlens-bench-"))
    try:
        root = tmp / "data"
        write_synthetic(root, "cifar100", train_per_class=a.train_per_class,
                        test_per_class=max(1, a.train_per_class // 5), archive=False)
        for p in root.rglob("*"):
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))
        sizes = {p.name: p.stat().st_size for p in (root / "cifar-100-python").iterdir()}
        say(f"data files: {sizes}")
        rows = []
        for cached in (False, True):
            r = measure(root, tmp / f"study-{int(cached)}", cached, a.epochs)
            r["load"] = loadavg()
            say(f"cache {'on ' if cached else 'off'}: {r['data_file_reads']} data file reads "
                f"({r['bytes_read'] / 2**20:.1f} MiB), {r['md5']} MD5s "
                f"({r['md5_bytes'] / 2**20:.1f} MiB), {r['read_folder_calls']} full reads "
                f"{r['read_folder_s']:.2f} s; study {r['study_s']:.1f} s")
            rows.append(r)
        write_json(a.json, {"benchmark": "data_reads", "train_per_class": a.train_per_class,
                            "epochs": a.epochs, "data_file_bytes": sizes, "rows": rows,
                            "machine": machine_info()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
