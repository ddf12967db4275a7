"""The `cifarlens` command: a thin layer that parses arguments and calls one stage each.

Each command imports its stage inside its handler, the one place where imports stay in
functions on purpose: `import cifarlens.cli` takes 0.09 s and the study stack 3.0 s (this
2-vCPU machine, best of 3), so `--help` and bad input answer before the stages load. (Building
the parser still loads torch, 1.1 s, through `TrainConfig`'s presets and model names.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cifarlens.cli import analyze, data, robustness, study, train
from cifarlens.cli.args import Parser, one_line
from cifarlens.cli.study import cmd_study
from cifarlens.cli.train import cmd_train
from cifarlens.errors import CifarlensError

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
    "robustness": "cifarlens robustness runs/smoke --images 500 --severities 1 3 5",
    "study": "cifarlens study --preset quick --change augment=cutout --seeds 3 --out studies/cutout\n"
             "cifarlens study --preset quick --seeds auto --max-seeds 8 --vary init --out studies/a\n"
             "cifarlens study --preset quick --robustness --seeds 3 --out studies/robust",
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
    from cifarlens._version import __version__

    p = Parser(prog="cifarlens", description="Train, evaluate, explain and compare CIFAR CNNs.")
    p.add_argument("--version", action="version", version=f"cifarlens {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    for module in (train, data, analyze, robustness, study):  # the order --help lists them in
        module.register(sub)
    _document(p)
    return p




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
    """How to continue after Ctrl-C, also when it came before the first epoch (the loop's own
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
        print(f"cifarlens: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cifarlens: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except OSError as e:  # e.g. permission denied on a path the user gave
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(one_line(f"cifarlens: error:{where} {e.strerror or e}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
