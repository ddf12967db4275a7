#!/usr/bin/env python
"""The demo's cost beside training (issues 9 and 20: everything but training at most 20% of
the demo's wall time), as the README runs it and with every core training.

Each round runs `cifarlens demo` (the smoke study: 3 seeds x 2 arms on generated data, then the
report) twice in fresh processes without OMP_NUM_THREADS: once as the README types it (the
default: half the cores train, the rest analyse each finished run beside the next one's
training) and once with `--threads <all cores>` (torch's default before issue 20: no core is
left, so every analysis waits for its run), alternating which goes first. It reads the stage
times the study records in summary.json["timing"]. "Outside training" is demo wall time minus
the train stage, as a share of the demo's wall time (start-up, data generation, evaluation,
analysis and the report all count against it).

  PYTHONPATH=src .venv/bin/python bench/stage_costs.py --rounds 2 \\
      --json bench/results/stage_costs_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, say, write_json  # noqa: E402

DEMO = ("import sys; from cifarlens.cli import main; "
        "sys.exit(main(['demo', '--out', sys.argv[1], '--no-progress', *sys.argv[2:]]))")
MODES = {"default": [], "all-cores": ["--threads", str(os.cpu_count() or 1)]}


def one_demo(mode: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DEMO, str(out), *MODES[mode]],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"demo failed ({mode}): {proc.stderr[-2000:]}")
    summary = json.loads((out / "study" / "summary.json").read_text())
    timing = summary["timing"]
    row = {"mode": mode, "threads": summary["environment"]["threads"], "wall_s": wall, **timing,
           "outside_training_s": wall - timing["train_s"],
           "outside_training_share": (wall - timing["train_s"]) / wall, "load": loadavg()}
    say(f"{mode:9}: wall {wall:.1f} s, train {timing['train_s']:.1f} s, evaluate "
        f"{timing['evaluate_s']:.1f} s, analysis {timing['analysis_s']:.1f} s, outside training "
        f"{100 * row['outside_training_share']:.1f}%")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the rows and the machine here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            for mode in (("all-cores", "default") if r % 2 == 0 else ("default", "all-cores")):
                rows.append({"round": r, **one_demo(mode, Path(d) / f"demo-{mode}")})
    for mode in MODES:
        mine = [x for x in rows if x["mode"] == mode]
        say(f"{mode}: mean wall {sum(x['wall_s'] for x in mine) / len(mine):.1f} s, outside "
            f"training {100 * sum(x['outside_training_share'] for x in mine) / len(mine):.1f}%")
    if a.json:
        write_json(a.json, {"rows": rows, "machine": machine_info()})


if __name__ == "__main__":
    main()
