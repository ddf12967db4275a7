"""The `cifarlens` command: a thin layer that parses arguments and calls one stage each."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    from .models import MODELS

    p.add_argument("--model", type=_model_name, default=default, metavar="MODEL",
                   help=f"{', '.join(MODELS)}, or your own PACKAGE.MODULE:FACTORY, a function "
                        "f(num_classes) -> nn.Module importable from your environment (e.g. "
                        "PYTHONPATH=.)" + (f" (default {default})" if default else ""))


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS, ENV_DATA_DIR

    p.add_argument("--data-dir", help=f"dataset folder (default: ${ENV_DATA_DIR} or the user cache)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .data import AUGMENTS
    from .train import PRESETS

    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="paper: the seed's recipe (50 epochs); quick: ~15 min on 2 CPU cores; "
                        "smoke: seconds, small model")
    _add_model_arg(p, None)
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_finite_float)
    p.add_argument("--weight-decay", type=_finite_float)
    p.add_argument("--label-smoothing", type=_finite_float)
    p.add_argument("--augment", choices=AUGMENTS,
                   help="none; crop-flip (4-px crop + flip); cutout, mixup, cutmix (each after "
                        "crop-flip; docs/models.md)")
    p.add_argument("--cutout-size", type=_positive_int, help="cutout square side (default 8)")
    p.add_argument("--mixup-alpha", type=_finite_float, help="mixup Beta(a, a) (default 1.0)")
    p.add_argument("--cutmix-alpha", type=_finite_float, help="cutmix Beta(a, a) (default 1.0)")
    p.add_argument("--seed", type=_nonneg_int)
    p.add_argument("--train-limit", type=_positive_int, help="use a class-balanced N-image subset")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", choices=["auto", "off", "graphs", "on"],
                   help="off: eager; graphs: CUDA graphs (seconds to set up); on: torch.compile "
                        "(~50 s); auto (default): graphs on one GPU, eager on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_arg(p)


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for torch in this command (default: torch's, one per core; "
                        "on a shared machine 1 is steadier, docs/benchmarks.md section 2)")


def _train_overrides(a: argparse.Namespace) -> dict:
    keys = ["model", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "augment",
            "cutout_size", "mixup_alpha", "cutmix_alpha",
            "seed", "train_limit", "device", "precision", "compile", "dataset", "data_dir"]
    return {k: getattr(a, k) for k in keys if getattr(a, k, None) is not None}


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
                             label_noise=a.label_noise, **kw)
    print(f"wrote generated {a.dataset} data to {folder} (and its archive beside it)")
    return 0


def cmd_data_info(a: argparse.Namespace) -> int:
    from .data import DATASETS, default_data_dir

    root = default_data_dir(a.data_dir)
    print(f"data folder: {root}")
    for name, spec in DATASETS.items():
        folder, archive = root / spec["folder"], root / spec["archive"]
        state = "extracted" if folder.is_dir() else "archive only" if archive.exists() else "absent"
        print(f"  {name}: {state} ({folder if folder.is_dir() else archive})")
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
    evaluate(a.run, splits, checkpoint=a.checkpoint, data_dir=a.data_dir, device=a.device)
    print(f"wrote predictions, metrics and figures to {a.run}")
    return 0


def cmd_failures(a: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .failures import find_failures

    if not (Path(a.run) / f"predictions_{a.split}.npz").exists():
        from .runs import require_run

        require_run(a.run)
        evaluate(a.run, (a.split,))
    r = find_failures(Path(a.run), a.split, top=a.top, confident=a.confident)
    print(f"wrote {a.run}/failures_{a.split}.json and {a.run}/{r['figures']['gallery']}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from .explanations import explain_run

    r = explain_run(a.run, a.split, failures=a.failures, indices=a.indices, target=a.target,
                    all_images=a.all, layer=a.layer)
    print(f"wrote {a.run}/explanations_{a.split}.npz ({r['explained']} images)")
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    from .study import run_study

    overrides = _train_overrides(a)
    changes = a.change or ["augment=crop-flip"]
    if len(changes) > 1:  # argparse kept only the last one before: a study of the wrong change
        raise CifarlensError(f"one --change per study (got {len(changes)}: {', '.join(changes)}); "
                             "run one study per change")
    summary = run_study(a.out, preset=a.preset, change=changes[0], seeds=a.seeds,
                        overrides=overrides, failures_top=a.top, jobs=a.jobs,
                        progress=not a.no_progress,
                        command=" ".join(["cifarlens", *sys.argv[1:]]) if sys.argv else None)
    _print_result(summary, Path(a.out))
    return 0


def _print_result(summary: dict, study: Path) -> None:
    """The verdict once, in the report's words, then where the report is (stdout: results)."""
    from .report import headline

    print(headline(summary, study))
    print(f"report: {study / 'report.html'}")


def cmd_report(a: argparse.Namespace) -> int:
    from .report import render_report

    study = Path(a.study)
    if not (study / "summary.json").is_file():
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
    from .study import demo

    summary = demo(a.out, seeds=a.seeds, jobs=a.jobs, progress=not a.no_progress)
    _print_result(summary, Path(a.out) / "study")
    return 0


def _split_arg(p: argparse.ArgumentParser, choices=("val", "test"), default="test") -> None:
    p.add_argument("--split", choices=choices, default=default)


def _add_seeds_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=_int_range(1, 1000), default=3,
                   help="train each arm with N seeds, paired by seed (default 3); the verdict is "
                        "the paired t-test across seeds. 1 compares one pair of trained models "
                        "and is not evidence about the change")
    p.add_argument("--jobs", type=_int_range(1, 64), default=1,
                   help="train up to N runs at once: one per GPU on a multi-GPU machine, else "
                        "CPU processes sharing the threads (no gain on a 2-core CPU); default 1")


def _register_analysis(sub) -> None:
    e = sub.add_parser("evaluate", help="predictions, metrics, calibration and figures of a run")
    e.add_argument("run", help="run folder made by `cifarlens train`")
    _split_arg(e, ("val", "test", "all"), "all")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best")
    e.add_argument("--data-dir", help="where the run's dataset is (default: as recorded)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    _add_threads_arg(e)
    e.set_defaults(func=cmd_evaluate)

    f = sub.add_parser("failures", help="rank wrong predictions by confidence; flag label errors")
    f.add_argument("run")
    _split_arg(f)
    f.add_argument("--top", type=_positive_int, default=12, help="images in the gallery")
    f.add_argument("--confident", type=_finite_float, default=CONFIDENT,
                   help="temperature-scaled confidence above which an error counts as "
                        f"confident (default {CONFIDENT})")
    _add_threads_arg(f)
    f.set_defaults(func=cmd_failures)

    x = sub.add_parser("explain", help="Grad-CAM for failures (or chosen images) of a run")
    x.add_argument("run")
    _split_arg(x)
    g = x.add_mutually_exclusive_group()
    g.add_argument("--failures", type=_positive_int, default=12, metavar="K",
                   help="explain the K most confident failures (default 12)")
    g.add_argument("--indices", type=_nonneg_int, nargs="+", metavar="I",
                   help="explain these dataset indices")
    g.add_argument("--all", action="store_true", help="explain every image of the split")
    x.add_argument("--target", choices=["predicted", "true", "both"], default="both")
    x.add_argument("--layer", "--cam-layer", dest="layer", metavar="NAME",
                   help="module to explain, e.g. features.20 (default: the last conv layer)")
    _add_threads_arg(x)
    x.set_defaults(func=cmd_explain)

    s = sub.add_parser("study", help="baseline vs one change: train, evaluate, explain, compare, report")
    _add_data_args(s)
    _add_train_args(s)
    s.add_argument("--out", default="study", help="study folder (default: ./study)")
    s.add_argument("--change", action="append", metavar="KEY=VALUE",
                   help="the ONE training setting the variant changes (default "
                        "augment=crop-flip); given twice it is refused, not silently narrowed")
    _add_seeds_jobs(s)
    s.add_argument("--top", type=_positive_int, default=12, help="failures to explain and track")
    s.set_defaults(func=cmd_study)

    r = sub.add_parser("report", help="rebuild a study's report from its saved artifacts")
    r.add_argument("study")
    r.add_argument("--figure-format", choices=["svg", "pdf"], default=None,
                   help="also redraw the figures the saved data allows (curves, confusions, "
                        "per-class changes, reliability) as SVG or PDF into "
                        "STUDY/figures/<format>/ (default: none)")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the smoke study on generated data, 3 seeds, offline "
                                     "(a few minutes on CPU)")
    d.add_argument("--out", default="cifarlens-demo", help="folder (default ./cifarlens-demo)")
    _add_seeds_jobs(d)
    d.add_argument("--no-progress", action="store_true")
    _add_threads_arg(d)
    d.set_defaults(func=cmd_demo)


# --- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="cifarlens", description="Train, evaluate, explain and compare CIFAR CNNs.")
    p.add_argument("--version", action="version", version=f"cifarlens {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train one model into a run folder")
    _add_data_args(t)
    _add_train_args(t)
    t.add_argument("--out", required=True, help="run folder to create (or continue with --resume)")
    t.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("complexity", help="parameter and FLOP counts of a model")
    from .data import DATASETS

    _add_model_arg(c, "baseline")
    c.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100")
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

    dp = sub.add_parser("data", help="dataset tools: synth, info, verify, download")
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
    s.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100",
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
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("info", help="where the data lives and what is there")
    i.add_argument("--data-dir")
    i.set_defaults(func=cmd_data_info)
    v = dsub.add_parser("verify", help="check every data file's checksum and format")
    _add_data_args(v)
    v.set_defaults(func=cmd_data_verify)
    dl = dsub.add_parser("download", help="download and verify the official archive")
    _add_data_args(dl)
    dl.set_defaults(func=cmd_data_download)

    for register in _EXTRA_COMMANDS:
        register(sub)
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
        print("cifarlens: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # e.g. permission denied on a path the user gave
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(_one_line(f"cifarlens: error:{where} {e.strerror or e}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
