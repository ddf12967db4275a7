"""What a run is: its training settings, the presets, and their checks."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from cifarlens.errors import CifarlensError
from cifarlens.training.augment import AUGMENTS
from cifarlens.training.models import (
    MODELS,
    canonical_model_name,
    is_user_model,
    resolve_factory,
)
from cifarlens.training.runtime import (
    COMPILE_MODES,
)


@dataclass
class TrainConfig:
    dataset: str = "cifar100"
    model: str = "vgg"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    augment: str = "none"
    # the augments' own settings (training/augment.py): used only by cutout, mixup, cutmix respectively
    cutout_size: int = 8  # DeVries & Taylor's CIFAR-100 size (16 for CIFAR-10)
    mixup_alpha: float = 1.0  # Zhang et al.'s CIFAR value
    cutmix_alpha: float = 1.0  # Yun et al.'s CIFAR value
    seed: int = 0
    val_fraction: float = 0.2
    train_limit: int | None = None
    # How to run, not what to learn: these may differ between runs that are compared.
    device: str = "auto"
    precision: str = "auto"
    eval_batch_size: int = 1000
    compile: str = "auto"
    data_dir: str | None = None


# Settings that change what is learned; `study --change` may vary exactly one of them.
TRAINING_SETTINGS = ("dataset", "model", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                     "label_smoothing", "warmup_epochs", "augment", "val_fraction", "train_limit",
                     "cutout_size", "mixup_alpha", "cutmix_alpha")

# One line of help per TrainConfig field: the CLI makes a flag of every field from this table
# (cli._add_train_args), so a new setting gets its flag and its help in one place.
SETTING_HELP: dict[str, str] = {
    "dataset": "dataset to train on",
    "model": "architecture: a built-in name or your own PACKAGE.MODULE:FACTORY, a function "
             "f(num_classes) -> nn.Module importable from your environment (e.g. PYTHONPATH=.)",
    "epochs": "training epochs",
    "batch_size": "images per SGD step (over all processes under torchrun)",
    "lr": "peak learning rate (after the linear warm-up; cosine to 0 after it)",
    "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay on conv/linear weights (not on BatchNorm or biases)",
    "label_smoothing": "label smoothing of the cross-entropy",
    "warmup_epochs": "epochs of linear learning-rate warm-up (may be fractional)",
    "augment": "none; crop-flip (4-px crop + flip); cutout, mixup, cutmix (each after "
               "crop-flip; docs/models.md)",
    "cutout_size": "cutout square side in pixels (used by --augment cutout)",
    "mixup_alpha": "mixup Beta(a, a) parameter (used by --augment mixup)",
    "cutmix_alpha": "cutmix Beta(a, a) parameter (used by --augment cutmix)",
    "seed": "random seed: split, initialisation, batch order, augmentation",
    "val_fraction": "fraction of the training set held out for validation (class-balanced)",
    "train_limit": "train on a class-balanced subset of N images (none: all)",
    "device": "auto: a CUDA GPU if there is one, else the CPU",
    "precision": "auto: bf16 on a GPU or a CPU with native bf16, else fp32",
    "eval_batch_size": "images per batch when validating",
    "compile": "off: eager; graphs: CUDA graphs (quick to set up); on: torch.compile (slow to set "
               "up: README, 'How long it takes'); auto: graphs on one GPU, eager on the CPU",
    "data_dir": "dataset folder (default: $CIFARLENS_DATA or the user cache)",
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # ~15 min on a 2-core CPU: the paper model and recipe on a 10k-image class-balanced subset.
    "quick": {"epochs": 10, "train_limit": 10_000},
    # Seconds, for tests and the demo: the quarter-width model on generated data.
    "smoke": {"model": "small", "epochs": 6, "batch_size": 64, "lr": 0.05, "warmup_epochs": 0.5},
}


def make_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    if preset not in PRESETS:
        raise CifarlensError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    cfg = TrainConfig(**PRESETS[preset])
    for k, v in overrides.items():
        if v is None and k != "train_limit":
            continue
        if k not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise CifarlensError(f"unknown setting {k!r}")
        setattr(cfg, k, v)
    cfg.model = canonical_model_name(cfg.model)  # "baseline" -> "vgg": one name in config.json
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    checks = [
        (canonical_model_name(cfg.model) in MODELS or is_user_model(cfg.model), f"unknown model {cfg.model!r}; choose "
         f"from: {', '.join(MODELS)}, or give your own as PACKAGE.MODULE:FACTORY"),
        (cfg.augment in AUGMENTS, f"unknown augment {cfg.augment!r}; choose from: {', '.join(AUGMENTS)}"),
        (cfg.epochs >= 1, "--epochs must be at least 1"),
        (0 <= cfg.seed < 2**32, "--seed must be an integer from 0 to 4294967295"),
        (cfg.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), "--lr must be a positive number"),
        (cfg.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 <= cfg.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (0 <= cfg.momentum < 1, "momentum must be in [0, 1)"),
        (cfg.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
        (0 < cfg.val_fraction < 1, "val_fraction must be in (0, 1)"),
        (cfg.train_limit is None or cfg.train_limit >= 1, "--train-limit must be positive"),
        (cfg.cutout_size >= 1, "--cutout-size must be at least 1"),
        (cfg.mixup_alpha > 0 and math.isfinite(cfg.mixup_alpha), "--mixup-alpha must be > 0"),
        (cfg.cutmix_alpha > 0 and math.isfinite(cfg.cutmix_alpha), "--cutmix-alpha must be > 0"),
        (cfg.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
        (cfg.compile in COMPILE_MODES, "--compile must be auto, off, graphs or on"),
        (cfg.eval_batch_size >= 1, "eval batch size must be at least 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise CifarlensError(msg)
    if is_user_model(cfg.model):  # import it now: a bad factory fails before any file is written

        resolve_factory(cfg.model)


def learned_settings(config: dict) -> dict[str, Any]:
    """A recorded config's training settings (and seed); a setting added after the run was made
    takes its default, which is what that run used."""
    default = dataclasses.asdict(TrainConfig())
    out = {k: config.get(k, default[k]) for k in TRAINING_SETTINGS + ("seed",)}
    # a run recorded as "baseline" (the VGG's older name) trained the same model as "vgg"
    out["model"] = canonical_model_name(out["model"])
    return out


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(setting, a's value, b's value) for each training setting or seed that differs: the one
    comparison behind both the study's one-change guard and resume's same-settings check."""
    a, b = learned_settings(a), learned_settings(b)
    return [(k, a[k], b[k]) for k in TRAINING_SETTINGS + ("seed",) if a[k] != b[k]]


def diff_configs(a: dict, b: dict) -> list[str]:
    return [f"{k}: {x!r} -> {y!r}" for k, x, y in config_diff(a, b)]
