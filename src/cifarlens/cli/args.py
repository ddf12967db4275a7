"""Argument types and the options several commands share."""

from __future__ import annotations

import argparse
import os
import sys

from cifarlens.errors import CifarlensError


def one_line(message: object) -> str:
    """A message for one terminal line: newlines, escapes and other control characters (which
    may come from the user's own arguments or paths) are shown escaped, never acted on."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line (usage stays behind --help)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def int_at_least(lo: int, what: str):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v

    return parse


positive_int = int_at_least(1, "a positive integer")
nonneg_int = int_at_least(0, "an integer >= 0")
# More torch threads than 4 per core only slows a run down, and an unbounded count spawned
# 32k threads (issue 20): --threads is refused above this.
MAX_THREADS = 4 * (os.cpu_count() or 1)


def threads_arg(s: str) -> int:
    v = positive_int(s)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads (4 per CPU "
                                         f"core on this machine), got {s!r}")
    return v


def int_range(lo: int, hi: int):
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


def finite_float(s: str) -> float:
    import math

    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def model_name_arg(s: str) -> str:
    from cifarlens.training.models import check_model_name

    try:
        check_model_name(s)
    except CifarlensError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def add_model_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    from cifarlens.training.models import ALIASES, MODELS

    aliases = "".join(f" ({a} = {n})" for a, n in ALIASES.items())
    p.add_argument("--model", type=model_name_arg, default=default, metavar="MODEL",
                   help=f"{', '.join(MODELS)}{aliases}, or your own PACKAGE.MODULE:FACTORY, a function "
                        "f(num_classes) -> nn.Module importable from your environment (e.g. "
                        "PYTHONPATH=.)" + (f" (default {default})" if default else ""))


def add_data_args(p: argparse.ArgumentParser) -> None:
    from cifarlens.data.registry import DATASETS, ENV_DATA_DIR

    p.add_argument("--data-dir", help=f"dataset folder (default: ${ENV_DATA_DIR} or the user cache)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100", help="which dataset")


NO_LIMIT = "none"  # --train-limit none: every training image (undoes the quick preset's limit)


def limit_arg(s: str) -> int | str:
    if s.strip().lower() in ("none", "all"):
        return NO_LIMIT
    return positive_int(s)


def setting_kwargs(name: str, kind: object) -> dict:
    """argparse type/choices for one TrainConfig field, from its annotation (a few fields have
    a closed set of values or a richer check)."""
    from cifarlens.data.registry import DATASETS
    from cifarlens.training.augment import AUGMENTS
    from cifarlens.training.runtime import COMPILE_MODES

    special: dict[str, dict] = {
        "model": {"type": model_name_arg, "metavar": "MODEL"},
        "dataset": {"choices": sorted(DATASETS)},
        "augment": {"choices": AUGMENTS},
        "device": {"choices": ["auto", "cpu", "cuda"]},
        "precision": {"choices": ["auto", "fp32", "bf16"]},
        "compile": {"choices": list(COMPILE_MODES)},
        "seed": {"type": nonneg_int},
        "train_limit": {"type": limit_arg, "metavar": "N"},
        "data_dir": {"metavar": "DIR"},
    }
    if name in special:
        return special[name]
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind is int:
        return {"type": positive_int}
    if kind is float:
        return {"type": finite_float}
    return {}


def setting_default_text(name: str) -> str:
    """The paper default and what each preset sets instead: the flags' defaults are None so
    that the preset decides, and the help says what it decides."""
    from cifarlens.training.config import PRESETS, TrainConfig

    def show(v: object) -> str:
        return "none" if v is None else str(v)

    if name == "data_dir":
        return ""
    text = f"default {show(getattr(TrainConfig(), name))}"
    presets = [f"{p} preset {show(v[name])}" for p, v in PRESETS.items() if name in v]
    return f" ({text}{'; ' + ', '.join(presets) if presets else ''})"


def add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, generated from it (so no setting lacks a flag), plus the
    preset and the progress/threads switches."""
    import dataclasses
    import typing

    from cifarlens.training.config import PRESETS, SETTING_HELP, TrainConfig

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
                       help=SETTING_HELP[f.name] + setting_default_text(f.name),
                       **setting_kwargs(f.name, kind))
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_arg(p)


def add_threads_arg(p: argparse.ArgumentParser,
                     default: str = "torch's, one per core") -> None:
    p.add_argument("--threads", type=threads_arg, metavar="N",
                   help=f"CPU threads for torch in this command (default: {default}; "
                        "on a shared machine 1 is steadier, docs/benchmarks.md section 2)")


def train_overrides(a: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (None: left to the preset)."""
    import dataclasses

    from cifarlens.training.config import TrainConfig

    out = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)
           if getattr(a, f.name, None) is not None}
    if out.get("train_limit") == NO_LIMIT:
        out["train_limit"] = None
    return out


def add_split_arg(p: argparse.ArgumentParser, choices=("val", "test"), default="test") -> None:
    p.add_argument("--split", choices=choices, default=default,
                   help="which predictions: val (held out from training), test" +
                        (", all (both)" if "all" in choices else ""))


def add_seeds_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int_range(1, 1000), default=3,
                   help="train each arm with N seeds, paired by seed (default 3); the verdict is "
                        "the paired t-test across seeds. 1 compares one pair of trained models "
                        "and is not evidence about the change")
    p.add_argument("--jobs", type=int_range(1, 64), default=1,
                   help="train up to N runs at once: one per GPU on a multi-GPU machine, else "
                        "CPU processes sharing the threads (no gain on a 2-core CPU); default 1")


def change_keys() -> list[str]:
    """The settings `study --change` accepts, read from the code that checks them."""
    from cifarlens.study.plan import PAIRING_SETTINGS
    from cifarlens.training.config import TRAINING_SETTINGS

    return [k for k in TRAINING_SETTINGS if k not in PAIRING_SETTINGS]
