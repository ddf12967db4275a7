#!/usr/bin/env python
"""The demo's cost beside training (issue #9: everything but training at most 20% of the demo's
wall time), with each run's analysis beside the next run's training and without it.

Each round runs `cifarlens demo` (the smoke study: 3 seeds x 2 arms on generated data, then the
report) twice in fresh processes, once with the overlap off and once on (`study.OVERLAP`),
alternating which goes first, and reads the stage times the study records in
summary.json["timing"]. "Outside training" is demo wall time minus the train stage, as a share
of the demo's wall time (start-up, data generation, evaluation, analysis and the report all
count against it).

  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/stage_costs.py --rounds 2 \\
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

DEMO = ("import sys; import cifarlens.study as st; st.OVERLAP = sys.argv[1]; "
        "from cifarlens.cli import main; sys.exit(main(['demo', '--out', sys.argv[2], "
        "'--no-progress']))")


def one_demo(overlap: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DEMO, overlap, str(out)], capture_output=True,
                          text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"demo failed ({overlap}): {proc.stderr[-2000:]}")
    timing = json.loads((out / "study" / "summary.json").read_text())["timing"]
    row = {"overlap": overlap, "wall_s": wall, **timing,
           "outside_training_s": wall - timing["train_s"],
           "outside_training_share": (wall - timing["train_s"]) / wall, "load": loadavg()}
    say(f"overlap {overlap:3}: wall {wall:.1f} s, train {timing['train_s']:.1f} s, evaluate "
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
            for overlap in (("off", "on") if r % 2 == 0 else ("on", "off")):
                rows.append({"round": r, **one_demo(overlap, Path(d) / f"demo-{overlap}")})
    for overlap in ("off", "on"):
        mine = [x for x in rows if x["overlap"] == overlap]
        say(f"{overlap}: mean wall {sum(x['wall_s'] for x in mine) / len(mine):.1f} s, outside "
            f"training {100 * sum(x['outside_training_share'] for x in mine) / len(mine):.1f}%")
    if a.json:
        write_json(a.json, {"rows": rows, "machine": machine_info()})


if __name__ == "__main__":
    main()
