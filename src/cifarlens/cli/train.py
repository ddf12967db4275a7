"""`cifarlens train` and `cifarlens complexity`."""

from __future__ import annotations

import argparse
import json
import os

from cifarlens.cli.args import (
    add_model_arg,
    add_train_args,
    one_line,
    positive_int,
    train_overrides,
)

# --- commands ---------------------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    cfg = make_config(a.preset, **train_overrides(a))
    summary = train(cfg, a.out, resume=a.resume, progress=not a.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    print(f"done: best val accuracy {100 * summary['best_val_acc']:.2f}% (epoch "
          f"{summary['best_epoch']}); run folder {a.out}")
    return 0


def cmd_complexity(a: argparse.Namespace) -> int:
    from cifarlens._units import fmt_flops
    from cifarlens.data.registry import dataset_spec
    from cifarlens.training.complexity import complexity, layer_table
    from cifarlens.training.models import build_model

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
    from cifarlens._units import fmt_flops

    def shape(r: dict) -> str:
        return "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"

    table = [("layer", "type", "output", "params", "FLOPs")]
    table += [(one_line(r["name"] or "(model)"), r["type"], shape(r), f"{r['params']:,}",
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


def register(sub) -> None:
    """`train` and `complexity`."""
    t = sub.add_parser("train", help="train one model into a run folder")
    add_train_args(t)
    t.add_argument("--out", required=True, help="run folder to create (or continue with --resume)")
    t.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("complexity", help="parameter and FLOP counts of a model")
    from cifarlens.data.registry import DATASETS

    add_model_arg(c, "vgg")
    c.add_argument("--dataset", choices=sorted(DATASETS), default="cifar100",
                   help="sets the number of classes (the last layer's size)")
    c.add_argument("--layers", action="store_true",
                   help="a layer-by-layer table (layer, type, output shape, parameters, FLOPs); "
                        "its rows sum to the totals")
    c.add_argument("--depth", type=positive_int, metavar="N",
                   help="with --layers: merge rows into blocks of N name parts (1: features, "
                        "classifier); implies --layers")
    c.add_argument("--json", action="store_true",
                   help="print JSON: the totals (keys params, flops, ...), or with --layers a "
                        "list of rows (name, type, output_shape, params, flops, calls)")
    c.set_defaults(func=cmd_complexity)
