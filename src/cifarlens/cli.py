"""The `cifarlens` command: a thin layer that parses arguments and calls one stage each."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _console as console
from ._defaults import CONFIDENT
from .errors import CifarlensError


def _one_line(message: object) -> str:
    """A message for one terminal line: newlines, escapes and other control characters (which
    may come from the user's own arguments or paths) are shown escaped, never acted on."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line (usage stays behind --help)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {_one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(lo: int, what: str):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")
# More torch threads than 4 per core only slows a run down, and an unbounded count spawned
# 32k threads (issue 20): --threads is refused above this.
MAX_THREADS = 4 * (os.cpu_count() or 1)


def _threads(s: str) -> int:
    v = _positive_int(s)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads (4 per CPU "
                                         f"core on this machine), got {s!r}")
    return v


def _int_range(lo: int, hi: int):
    """An integer type with bounds, for counts that size memory or work before any file is read
    (a huge --seeds or --train-per-class would otherwise exhaust memory instead of failing)."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {s!r}")
        return v

    return parse


def _finite_float(s: str) -> float:
    import math

    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def _model_name(s: str) -> str:
    from .models import check_model_name

    try:
        check_model_name(s)
    except CifarlensError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def _add_model_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    from .models import ALIASES, MODELS

    aliases = "".join(f" ({a} = {n})" for a, n in ALIASES.items())
    p.add_argument("--model", type=_model_name, default=default, metavar="MODEL",
                   help=f"{', '.join(MODELS)}{aliases}, or your own PACKAGE.MODULE:FACTORY, a function "
                        "f(num_classes) -> nn.Module importable from your environment (e.g. "
                        "PYTHONPATH=.)" + (f" (default {default})" if default else ""))


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS, ENV_DATA_DIR

    p.add_argument("--data-dir", help=f"dataset folder (default: ${ENV_DATA_DIR} or the user cache)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100", help="which dataset")


_NO_LIMIT = "none"  # --train-limit none: every training image (undoes the quick preset's limit)


def _limit(s: str) -> int | str:
    if s.strip().lower() in ("none", "all"):
        return _NO_LIMIT
    return _positive_int(s)


def _setting_kwargs(name: str, kind: object) -> dict:
    """argparse type/choices for one TrainConfig field, from its annotation (a few fields have
    a closed set of values or a richer check)."""
    from .data import AUGMENTS, DATASETS
    from .train import COMPILE_MODES

    special: dict[str, dict] = {
        "model": {"type": _model_name, "metavar": "MODEL"},
        "dataset": {"choices": sorted(DATASETS)},
        "augment": {"choices": AUGMENTS},
        "device": {"choices": ["auto", "cpu", "cuda"]},
        "precision": {"choices": ["auto", "fp32", "bf16"]},
        "compile": {"choices": list(COMPILE_MODES)},
        "seed": {"type": _nonneg_int},
        "train_limit": {"type": _limit, "metavar": "N"},
        "data_dir": {"metavar": "DIR"},
    }
    if name in special:
        return special[name]
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind is int:
        return {"type": _positive_int}
    if kind is float:
        return {"type": _finite_float}
    return {}


def _setting_default_text(name: str) -> str:
    """The paper default and what each preset sets instead: the flags' defaults are None so
    that the preset decides, and the help says what it decides."""
    from .train import PRESETS, TrainConfig

    def show(v: object) -> str:
        return "none" if v is None else str(v)

    if name == "data_dir":
        return ""
    text = f"default {show(getattr(TrainConfig(), name))}"
    presets = [f"{p} preset {show(v[name])}" for p, v in PRESETS.items() if name in v]
    return f" ({text}{'; ' + ', '.join(presets) if presets else ''})"


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, generated from it (so no setting lacks a flag), plus the
    preset and the progress/threads switches."""
    import dataclasses
    import typing

    from .train import PRESETS, SETTING_HELP, TrainConfig

    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="paper: the seed's recipe, 50 epochs; quick: the paper model on 10,000 "
                        "images for 10 epochs; smoke: a small model for 6 epochs, for tests and the "
                        "demo (times: README, 'How long it takes'); every setting it fixes can be "
                        "overridden by the flags below")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        if typing.get_origin(kind) is not None:  # X | None: the X
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=SETTING_HELP[f.name] + _setting_default_text(f.name),
                       **_setting_kwargs(f.name, kind))
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_arg(p)


def _add_threads_arg(p: argparse.ArgumentParser,
                     default: str = "torch's, one per core") -> None:
    p.add_argument("--threads", type=_threads, metavar="N",
                   help=f"CPU threads for torch in this command (default: {default}; "
                        "on a shared machine 1 is steadier, docs/benchmarks.md section 2)")


def _train_overrides(a: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (None: left to the preset)."""
    import dataclasses

    from .train import TrainConfig

    out = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)
           if getattr(a, f.name, None) is not None}
    if out.get("train_limit") == _NO_LIMIT:
        out["train_limit"] = None
    return out


# --- commands ---------------------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    from .train import make_config, train

    cfg = make_config(a.preset, **_train_overrides(a))
    summary = train(cfg, a.out, resume=a.resume, progress=not a.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    print(f"done: best val accuracy {100 * summary['best_val_acc']:.2f}% (epoch "
          f"{summary['best_epoch']}); run folder {a.out}")
    return 0


def cmd_complexity(a: argparse.Namespace) -> int:
    from .complexity import complexity, fmt_flops, layer_table
    from .data import dataset_spec
    from .models import build_model

    model = build_model(a.model, dataset_spec(a.dataset)["num_classes"])
    c = complexity(model)
    if a.layers or a.depth is not None:
        rows = layer_table(model, depth=a.depth)
        if a.json:
            print(json.dumps([{**r, "output_shape": list(r["output_shape"] or []) or None}
                              for r in rows]))
            return 0
        print(_layer_text(rows, c))
        return 0
    if a.json:
        print(json.dumps(c))
        return 0
    print(f"model {a.model} ({a.dataset}): {c['params']:,} parameters "
          f"({c['trainable_params']:,} trainable), {c['flops']:,} FLOPs per image "
          f"({fmt_flops(c['flops'])}, multiply-add = 2)")
    return 0


def _layer_text(rows: list[dict], totals: dict) -> str:
    from .complexity import fmt_flops

    def shape(r: dict) -> str:
        return "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"

    table = [("layer", "type", "output", "params", "FLOPs")]
    table += [(_one_line(r["name"] or "(model)"), r["type"], shape(r), f"{r['params']:,}",
               f"{r['flops']:,}") for r in rows]
    table.append(("total", "", "", f"{totals['params']:,}", f"{totals['flops']:,}"))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = ["  ".join(v.ljust(w) if i < 3 else v.rjust(w)
                       for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    lines.append(f"(FLOPs per 3x32x32 image, multiply-add = 2: {fmt_flops(totals['flops'])})")
    return "\n".join(lines)


def cmd_data_synth(a: argparse.Namespace) -> int:
    from .data import default_data_dir
    from .synth import write_synthetic

    kw = {k: v for k, v in (("train_per_class", a.train_per_class),
                            ("test_per_class", a.test_per_class)) if v is not None}
    folder = write_synthetic(default_data_dir(a.data_dir), a.dataset, seed=a.seed,
                             label_noise=a.label_noise, train_label_noise=a.train_label_noise,
                             train_noise_kind=a.train_noise_kind, **kw)
    print(f"wrote generated {a.dataset} data to {folder} (and its archive beside it)")
    return 0


def cmd_data_info(a: argparse.Namespace) -> int:
    from .data import DATASETS, USER, default_data_dir
    from .userdata import USER_FOLDERS, USER_MANIFEST, read_manifest

    root = default_data_dir(a.data_dir)
    print(f"data folder: {root}")
    for name, spec in DATASETS.items():
        if name == USER:
            continue
        folder, archive = root / spec["folder"], root / spec["archive"]
        state = "extracted" if folder.is_dir() else "archive only" if archive.exists() else "absent"
        print(f"  {name}: {state} ({folder if folder.is_dir() else archive})")
    for folder in [root] + [root / n for n in USER_FOLDERS]:
        if (folder / USER_MANIFEST).is_file():
            try:
                m = read_manifest(folder)
                state = (f"registered as {m['name']!r}, {m['num_classes']} classes, "
                         f"{m['sizes']['train']} train / {m['sizes']['test']} test images")
            except CifarlensError as e:
                state = f"unreadable manifest ({e})"
            print(_one_line(f"  user: {state} ({folder})"))
    return 0


def cmd_data_register(a: argparse.Namespace) -> int:
    from .userdata import register

    folder, m, what = register(a.dir, a.name, force=a.force)
    said = {"unchanged": "already registered, files unchanged; nothing written",
            "registered": "registered", "re-registered": "registered again"}[what]
    print(_one_line(f"{folder}: {said}: {m['name']!r}, {m['layout']} layout, "
                    f"{m['num_classes']} classes, {m['sizes']['train']} train / "
                    f"{m['sizes']['test']} test images of {m['image_size']}x{m['image_size']}"
                    + (f", {m['superclasses']} superclasses" if m["superclasses"] else "")
                    + f"; use it with --dataset user --data-dir {folder}"))
    return 0


def cmd_data_import(a: argparse.Namespace) -> int:
    from .userdata import import_images, read_manifest

    folder = import_images(a.src, a.data_dir, size=a.size, name=a.name)
    m = read_manifest(folder)
    print(_one_line(f"imported {m['sizes']['train']} train / {m['sizes']['test']} test images "
                    f"of {m['num_classes']} classes as {m['name']!r} into {folder}; use it with "
                    f"--dataset user --data-dir {folder}"))
    return 0


def cmd_data_verify(a: argparse.Namespace) -> int:
    from .data import load_dataset

    d = load_dataset(a.dataset, a.data_dir, download=False)  # reads only: nothing is extracted
    where = f"{d.extra['archive']} (read in place)" if "archive" in d.extra else d.folder
    print(f"{a.dataset} at {where}: {d.source} data, checksums OK; {len(d.train_y)} train / "
          f"{len(d.test_y)} test images, {d.num_classes} classes")
    return 0


def cmd_data_download(a: argparse.Namespace) -> int:
    from .data import locate

    folder = locate(a.dataset, a.data_dir, download=True)
    print(f"{a.dataset} ready at {folder}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate

    splits = ("val", "test") if a.split == "all" else (a.split,)
    evaluate(a.run, splits, checkpoint=a.checkpoint, data_dir=a.data_dir, device=a.device,
             progress=not a.no_progress)
    print(f"wrote predictions, metrics and figures to {a.run}")
    return 0


def _prepare_run(a: argparse.Namespace, *, failures: bool):
    """The stages a command's stage needs first, run only where their outputs are missing or
    come from another checkpoint: predictions (evaluate), then failures when asked."""
    from .evaluate import evaluate
    from .failures import find_failures
    from .runs import Run

    run = Run.open(a.run)
    if not run.predictions_current(a.split):
        evaluate(run, (a.split,), progress=not a.no_progress)
    if failures and run.current_failures(a.split) is None:
        find_failures(run, a.split, progress=not a.no_progress)
    return run


def cmd_failures(a: argparse.Namespace) -> int:
    from .failures import find_failures

    run = _prepare_run(a, failures=False)
    r = find_failures(run, a.split, top=a.top, confident=a.confident,
                      progress=not a.no_progress)
    print(f"wrote {run.file(run.failures_name(a.split))} and {run.file(r['figures']['gallery'])}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from .explain import check_indices, explain_run

    check_indices(a.run, a.split, a.indices)  # before evaluate writes anything
    # the top failures are what a plain explain shows; chosen images or --all need none
    run = _prepare_run(a, failures=not a.indices and not a.all)
    r = explain_run(run, a.split, failures=a.failures, indices=a.indices, target=a.target,
                    all_images=a.all, layer=a.layer, progress=not a.no_progress)
    print(f"wrote {run.file(r['file'])} ({r['explained']} images)")  # ad-hoc: a tagged name
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    from .study import run_study

    overrides = _train_overrides(a)
    # None: augment=crop-flip for a new study, the recorded changes when resuming one
    summary = run_study(a.out, preset=a.preset, changes=a.change, seeds=a.seeds,
                        overrides=overrides, failures_top=a.top, jobs=a.jobs,
                        progress=not a.no_progress,
                        command=" ".join(["cifarlens", *sys.argv[1:]]) if sys.argv else None)
    _print_result(summary, Path(a.out))
    return 0


# The demo's verdict is one machine's: bf16 kernels and thread counts move its last bits, and
# with 3 seeds of a small model that can flip "significant" (issue 20).
DEMO_NOTE = ("note: generated data; the verdict varies with the CPU type, precision and "
             "threads, the pipeline and figures do not (README, Reproducibility)")


def _print_result(summary: dict, study: Path, note: str | None = None) -> None:
    """The verdict once, in the report's words, then where the report is (stdout: results)."""
    from .report import ablation_lines, headline

    print(headline(summary, study))
    for line in ablation_lines(summary):
        print(line)
    if note:
        print(note)
    took = _time_line(summary)
    if took:
        print(took)
    print(f"report: {study / 'report.html'}")


def _time_line(summary: dict) -> str | None:
    """What this invocation measured: its wall time and the share spent outside training, on
    which device and threads (the README's time table is one machine's; this is yours)."""
    t, env = summary.get("timing") or {}, summary.get("environment") or {}
    total, train = t.get("total_s"), t.get("train_s")
    if not isinstance(total, (int, float)) or total <= 0:
        return None
    fmt_duration = console.fmt_duration
    line = f"time: {fmt_duration(total)} in all"
    if isinstance(train, (int, float)) and train > 0:
        line += (f", {fmt_duration(train)} training ({100 * (total - train) / total:.0f}% "
                 "outside training)")
    gpu = str(env.get("device") or "").startswith("cuda")
    where = (env.get("gpu_model") if gpu else env.get("cpu_model")) or env.get("device")
    if where:
        k = env.get("threads")
        line += f", on {where}" + (f" with {k} thread{'s' * (k != 1)}" if k else "")
    return line


def cmd_report(a: argparse.Namespace) -> int:
    from .report import render_report

    study = Path(a.study)
    from .study_folder import StudyFolder

    if not (study / StudyFolder.SUMMARY).is_file():
        raise CifarlensError(f"{study} is not a finished study (no summary.json)")
    html, md = render_report(study)
    print(f"report: {html} (markdown: {md})")
    if getattr(a, "figure_format", None):
        from .report import export_figures

        files, skipped = export_figures(study, a.figure_format)
        for f in files:
            print(f"figure: {f}")
        if skipped:
            print(f"not redrawn: {'; '.join(skipped)}", file=sys.stderr)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .study import demo, demo_threads

    if not a.threads and "OMP_NUM_THREADS" not in os.environ and a.jobs == 1:
        import torch

        n = demo_threads(os.cpu_count(), torch.cuda.is_available())
        if n is not None:  # this command's process only, like --threads
            torch.set_num_threads(n)
            console.log(f"demo: training on {n} of {os.cpu_count()} CPU threads, analysing "
                        "finished runs on the rest (--threads N to choose)")
    summary = demo(a.out, seeds=a.seeds, jobs=a.jobs, progress=not a.no_progress)
    _print_result(summary, Path(a.out) / "study", note=DEMO_NOTE)
    return 0


def _split_arg(p: argparse.ArgumentParser, choices=("val", "test"), default="test") -> None:
    p.add_argument("--split", choices=choices, default=default,
                   help="which predictions: val (held out from training), test" +
                        (", all (both)" if "all" in choices else ""))


def _add_seeds_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=_int_range(1, 1000), default=3,
                   help="train each arm with N seeds, paired by seed (default 3); the verdict is "
                        "the paired t-test across seeds. 1 compares one pair of trained models "
                        "and is not evidence about the change")
    p.add_argument("--jobs", type=_int_range(1, 64), default=1,
                   help="train up to N runs at once: one per GPU on a multi-GPU machine, else "
                        "CPU processes sharing the threads (no gain on a 2-core CPU); default 1")


def _change_keys() -> list[str]:
    """The settings `study --change` accepts, read from the code that checks them."""
    from .study import PAIRING_SETTINGS
    from .train import TRAINING_SETTINGS

    return [k for k in TRAINING_SETTINGS if k not in PAIRING_SETTINGS]


def _register_analysis(sub) -> None:
    e = sub.add_parser("evaluate", help="predictions, metrics, calibration and figures of a run")
    e.add_argument("run", help="run folder made by `cifarlens train`")
    _split_arg(e, ("val", "test", "all"), "all")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best: the epoch with the highest validation accuracy; last: the final one")
    e.add_argument("--data-dir", help="where the run's dataset is (default: as recorded)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: a CUDA GPU if there is one, else the CPU")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads_arg(e)
    e.set_defaults(func=cmd_evaluate)

    f = sub.add_parser("failures", help="rank wrong predictions by confidence; flag label errors")
    f.add_argument("run", help="run folder made by `cifarlens train` (evaluated first if needed)")
    _split_arg(f)
    f.add_argument("--top", type=_positive_int, default=12, help="images in the gallery")
    f.add_argument("--confident", type=_finite_float, default=CONFIDENT,
                   help="temperature-scaled confidence above which an error counts as "
                        f"confident (default {CONFIDENT})")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads_arg(f)
    f.set_defaults(func=cmd_failures)

    x = sub.add_parser("explain", help="Grad-CAM for failures (or chosen images) of a run")
    x.add_argument("run", help="run folder made by `cifarlens train` (evaluated, and its "
                               "failures found, first if needed)")
    _split_arg(x)
    g = x.add_mutually_exclusive_group()
    g.add_argument("--failures", type=_positive_int, default=12, metavar="K",
                   help="explain the K most confident failures (default 12)")
    g.add_argument("--indices", type=_nonneg_int, nargs="+", metavar="I",
                   help="explain these dataset indices")
    g.add_argument("--all", action="store_true", help="explain every image of the split")
    x.add_argument("--target", choices=["predicted", "true", "both"], default="both",
                   help="explain the predicted class, the true class, or both")
    x.add_argument("--layer", "--cam-layer", dest="layer", metavar="NAME",
                   help="module to explain, e.g. features.20 (default: the last conv layer)")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads_arg(x)
    x.set_defaults(func=cmd_explain)

    s = sub.add_parser("study", help="baseline vs one change: train, evaluate, explain, compare, report")
    _add_train_args(s)
    s.add_argument("--out", default="study", help="study folder (default: ./study)")
    s.add_argument("--change", action="append", metavar="KEY=VALUE",
                   help="a training setting one variant changes (default augment=crop-flip); "
                        "repeat for several variants against one shared baseline; new changes "
                        "are added to an existing study in --out, reusing its runs. "
                        f"KEY is one of: {', '.join(_change_keys())}")
    _add_seeds_jobs(s)
    s.add_argument("--top", type=_positive_int, default=12, help="failures to explain and track")
    s.set_defaults(func=cmd_study)

    r = sub.add_parser("report", help="rebuild a study's report from its saved artifacts")
    r.add_argument("study", help="study folder made by `cifarlens study` (with summary.json)")
    r.add_argument("--figure-format", choices=["svg", "pdf"], default=None,
                   help="also redraw the figures the saved data allows (curves, confusions, "
                        "per-class changes, reliability) as SVG or PDF into "
                        "STUDY/figures/<format>/ (default: none)")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the smoke study on generated data, 3 seeds, offline "
                                     "(time: README, 'How long it takes')")
    d.add_argument("--out", default="cifarlens-demo", help="folder (default ./cifarlens-demo)")
    _add_seeds_jobs(d)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_arg(d, "half the cores on a CPU, the other half analysing finished runs "
                        "beside training; OMP_NUM_THREADS is respected")
    d.set_defaults(func=cmd_demo)


# --- parser -----------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (line breaks kept); option help wrapped."""


# One example per command, shown under its --help (every command must have one: a test checks).
_EXAMPLES: dict[str, str] = {
    "": "cifarlens demo --out cifarlens-demo",
    "train": "cifarlens train --preset smoke --data-dir data --out runs/smoke\n"
             "cifarlens train --preset paper --momentum 0.95 --out runs/paper-m95",
    "complexity": "cifarlens complexity --model resnet18 --layers --depth 1",
    "data": "cifarlens data info",
    "data synth": "cifarlens data synth --dataset cifar10 --data-dir data",
    "data info": "cifarlens data info --data-dir data",
    "data verify": "cifarlens data verify --dataset cifar100 --data-dir data",
    "data download": "cifarlens data download --dataset cifar100",
    "data register": "cifarlens data register ~/data/relabelled/cifar-100-python --name relabelled",
    "data import": "cifarlens data import ~/pictures/flowers --data-dir ~/data/flowers",
    "evaluate": "cifarlens evaluate runs/smoke --split test",
    "failures": "cifarlens failures runs/smoke --top 12",
    "explain": "cifarlens explain runs/smoke --failures 6 --target both",
    "study": "cifarlens study --preset quick --change augment=cutout --seeds 3 --out studies/cutout",
    "report": "cifarlens report studies/cutout",
    "demo": "cifarlens demo --out cifarlens-demo --seeds 3",
}


def _document(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every (sub-)command the same --help shape: its one-line description, an example
    (from _EXAMPLES) and each option's default. Done after building, so commands that others
    register get it too."""
    parser.formatter_class = _Formatter
    example = _EXAMPLES.get(path)
    if example and not parser.epilog:
        parser.epilog = "example:\n" + "\n".join(f"  {line}" for line in example.splitlines())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for name, sp in action.choices.items():
                if not sp.description and helps.get(name):
                    h = helps[name]
                    sp.description = h[0].upper() + h[1:] + ("" if h.endswith(".") else ".")
                _document(sp, f"{path} {name}".strip())
            continue
        has_default = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if action.help and has_default and "default" not in action.help:
            action.help += " (default: %(default)s)"



def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="cifarlens", description="Train, evaluate, explain and compare CIFAR CNNs.")
    p.add_argument("--version", action="version", version=f"cifarlens {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train one model into a run folder")
    _add_train_args(t)
    t.add_argument("--out", required=True, help="run folder to create (or continue with --resume)")
    t.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("complexity", help="parameter and FLOP counts of a model")
    from .data import DATASETS

    _add_model_arg(c, "vgg")
    c.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100",
                   help="sets the number of classes (the last layer's size)")
    c.add_argument("--layers", action="store_true",
                   help="a layer-by-layer table (layer, type, output shape, parameters, FLOPs); "
                        "its rows sum to the totals")
    c.add_argument("--depth", type=_positive_int, metavar="N",
                   help="with --layers: merge rows into blocks of N name parts (1: features, "
                        "classifier); implies --layers")
    c.add_argument("--json", action="store_true",
                   help="print JSON: the totals (keys params, flops, ...), or with --layers a "
                        "list of rows (name, type, output_shape, params, flops, calls)")
    c.set_defaults(func=cmd_complexity)

    dp = sub.add_parser("data", help="dataset tools: synth, info, verify, download, register, "
                                     "import")
    dsub = dp.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dsub.required = True
    from .synth import DATASETS as SYNTH

    per_class = "; ".join(f"{k}: {v['train_per_class']} train / {v['test_per_class']} test"
                          for k, v in sorted(SYNTH.items()))
    s = dsub.add_parser(
        "synth", help="write a small generated dataset in the official format",
        description="Write a small generated dataset (coloured shapes on clutter, with object "
                    "boxes) in the official CIFAR python format, plus its archive. Only writes "
                    "into an empty folder or over data cifarlens generated; official data and "
                    f"foreign files are never overwritten. Default images per class: {per_class}.")
    s.add_argument("--data-dir", "--out", dest="data_dir", metavar="DIR",
                   help="data folder to write into (default: $CIFARLENS_DATA or the user cache); "
                        "--out is the older name")
    s.add_argument("--dataset", choices=sorted(SYNTH), default="cifar100",
                   help="format to write (default cifar100)")
    s.add_argument("--train-per-class", type=_int_range(1, 10_000),
                   help="training images per class (default: "
                        + ", ".join(f"{v['train_per_class']} for {k}" for k, v in sorted(SYNTH.items()))
                        + ")")
    s.add_argument("--test-per-class", type=_int_range(1, 10_000),
                   help="test images per class (default: "
                        + ", ".join(f"{v['test_per_class']} for {k}" for k, v in sorted(SYNTH.items()))
                        + ")")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    s.add_argument("--label-noise", type=_finite_float, default=0.0,
                   help="fraction of test labels to corrupt (recorded), for label-error checks "
                        "(default 0)")
    s.add_argument("--train-label-noise", type=_finite_float, default=0.0, metavar="RATE",
                   help="fraction of TRAINING labels to flip (recorded in the manifest), for "
                        "scoring label-issue detection (default 0)")
    s.add_argument("--train-noise-kind", choices=("uniform", "confusable"), default="uniform",
                   help="uniform: to a random other class; confusable: to the class whose "
                        "object looks most alike (default uniform)")
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("info", help="where the data lives and what is there")
    i.add_argument("--data-dir", help="data folder (default: $CIFARLENS_DATA or the user cache)")
    i.set_defaults(func=cmd_data_info)
    v = dsub.add_parser("verify", help="check every data file's checksum and format")
    _add_data_args(v)
    v.set_defaults(func=cmd_data_verify)
    dl = dsub.add_parser("download", help="download and verify the official archive")
    _add_data_args(dl)
    dl.set_defaults(func=cmd_data_download)
    r = dsub.add_parser(
        "register", help="check your own CIFAR-format data and write its checksums once",
        description="Check a folder of CIFAR python files that is not the official data (a "
                    "relabelled CIFAR-100, a subset, your own classes) and write its manifest "
                    "cifarlens-data.json (MD5 and size of every file, classes, image counts) "
                    "once; every later read checks the files against it. Then: "
                    "--dataset user --data-dir DIR. See docs/data.md.")
    r.add_argument("dir", metavar="DIR",
                   help="the folder holding the files (named cifarlens-user, cifar-100-python or "
                        "cifar-10-batches-py), or its parent")
    r.add_argument("--name", help="what reports call the data (default: the folder's name, or "
                                  "its parent's for the standard folder names)")
    r.add_argument("--force", action="store_true",
                   help="register again although files changed since the last registration")
    r.set_defaults(func=cmd_data_register)
    im = dsub.add_parser(
        "import", help="convert a folder of images in class subfolders into CIFAR format",
        description="Convert SRC/train/CLASS/*.png|jpg|jpeg and SRC/test/CLASS/... once into "
                    "the CIFAR python format (uint8 arrays, label names from the folder names "
                    "sorted) in DIR/cifarlens-user, with its manifest. Images are centre-cropped "
                    "to a square and resized to --size (bicubic). Nothing is left behind when an "
                    "image cannot be read. Then: --dataset user --data-dir DIR.")
    im.add_argument("src", metavar="SRC", help="folder with train/ and test/ class folders")
    im.add_argument("--data-dir", required=True, metavar="DIR",
                    help="folder to write cifarlens-user/ into (must not hold one yet)")
    im.add_argument("--size", type=_int_range(8, 512), default=32,
                    help="image side in pixels (default 32; the built-in VGG models take only "
                         "32, resnet18 any size from 8)")
    im.add_argument("--name", help="what reports call the data (default: SRC's folder name)")
    im.set_defaults(func=cmd_data_import)

    for register in _EXTRA_COMMANDS:
        register(sub)
    _document(p)
    return p


# Later stages register their own sub-commands here (keeps this file a thin table).
_EXTRA_COMMANDS: list = [_register_analysis]


_PATH_ARGS = ("out", "run", "study", "data_dir")


def _check_args(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Checks that span sub-commands, made before any work starts."""
    for name in _PATH_ARGS:
        v = getattr(a, name, None)
        if isinstance(v, str) and not v.strip():
            # "" would mean the current folder: a run trained into it, files beside the user's
            parser.error(f"--{name.replace('_', '-')} must not be empty"
                         if name in ("out", "data_dir") else f"{name} must not be empty")
    c = getattr(a, "confident", None)
    if c is not None and not 0.0 < c < 1.0:
        parser.error(f"--confident must be a probability between 0 and 1, got {c:g}")


def _resume_hint(a: argparse.Namespace) -> str:
    """How to continue after Ctrl-C, also when it came before the first epoch (train.py's own
    message covers only the epoch loop): train resumes with --resume, a study by rerunning it."""
    out = getattr(a, "out", None)
    if a.func is cmd_train and out:
        return f"; continue {out} with the same command and --resume"
    if a.func is cmd_study and out:
        return f"; rerun the same command to resume {out}"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)  # asked for by this command: its process only
    try:
        return int(args.func(args) or 0)
    except CifarlensError as e:
        print(f"cifarlens: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cifarlens: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except OSError as e:  # e.g. permission denied on a path the user gave
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(_one_line(f"cifarlens: error:{where} {e.strerror or e}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
