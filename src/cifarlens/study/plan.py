"""The study's plan: the arms, the seeds and the one-change guard."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens.errors import CifarlensError
from cifarlens.training.config import TRAINING_SETTINGS, TrainConfig, config_diff, make_config

# --- the one-change guard -------------------------------------------------------------------------


def parse_change(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` for one training setting, VALUE parsed to the setting's type."""
    if "=" not in text:
        raise CifarlensError(f"--change must look like KEY=VALUE (e.g. augment=crop-flip), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    key = key.replace("-", "_")
    if key in PAIRING_SETTINGS:
        raise CifarlensError(_pairing_refusal(key))
    if key not in TRAINING_SETTINGS:
        # only the settings the one-change guard accepts: never suggest one it then refuses
        changeable = [k for k in TRAINING_SETTINGS if k not in PAIRING_SETTINGS]
        raise CifarlensError(f"--change: {key!r} is not a training setting; choose from: "
                             f"{', '.join(changeable)}")
    default = getattr(TrainConfig(), key)
    if raw.lower() in ("none", "null") and key == "train_limit":
        return key, None
    try:
        if key == "train_limit" or isinstance(default, int) and not isinstance(default, bool):
            return key, int(raw)
        if isinstance(default, float):
            v = float(raw)
            if not np.isfinite(v):
                raise ValueError
            return key, v
    except ValueError:
        raise CifarlensError(f"--change: {key} needs a {type(default).__name__}, got {raw!r}") from None
    return key, raw


def config_differences(a: TrainConfig, b: TrainConfig) -> list[tuple[str, Any, Any]]:
    return config_diff(dataclasses.asdict(a), dataclasses.asdict(b))


# Settings whose change breaks the pairing of the two arms: other test images (dataset) or
# another split (val_fraction), so neither McNemar nor the seed-paired test would apply.
PAIRING_SETTINGS = ("dataset", "val_fraction")


def _pairing_refusal(key: str) -> str:
    return (f"--change {key} is refused: the two arms would not be compared on the same "
            f"{'test images' if key == 'dataset' else 'split'}, so the paired tests do not apply; "
            "run two studies instead")


def one_change_guard(a: TrainConfig, b: TrainConfig) -> str:
    """The seed's method rests on exactly one modification: refuse anything else."""
    for key in PAIRING_SETTINGS:
        if getattr(a, key) != getattr(b, key):
            raise CifarlensError(_pairing_refusal(key))
    if a.seed != b.seed:
        raise CifarlensError(f"baseline and variant must share the seed ({a.seed} vs {b.seed}); "
                             "use --seeds N to repeat both arms over several seeds")
    diffs = config_differences(a, b)
    if len(diffs) != 1:
        listed = "; ".join(f"{k} ({x!r} vs {y!r})" for k, x, y in diffs)
        what = "no setting" if not diffs else f"{len(diffs)} settings: {listed}"
        raise CifarlensError(f"baseline and variant must differ in exactly one training setting, "
                             f"but they differ in {what}")
    return diffs[0][0]


# --- the study ------------------------------------------------------------------------------------


# Three seeds per arm by default: the fewest that give the seed-level t-test 2 degrees of freedom.
# One pair of trained models measures only which test images were drawn, not training noise.
DEFAULT_SEEDS = 3
DEFAULT_CHANGE = "augment=crop-flip"
SINGLE_SLUG = "variant"  # a one-change study's variant arm: runs/variant-sN, as always


def change_slug(key: str, value: Any) -> str:
    """A run-folder-safe name for one change, e.g. 'augment=crop-flip', 'weight_decay=0.001'
    (its runs: runs/SLUG-sN). Anything but letters, digits and . _ = + - becomes '_'; a long
    value (a model's import path) is cut and keeps a hash of the full text, so slugs stay unique."""
    text = f"{key}={value}"
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)
    if len(slug) > 60:
        slug = slug[:50] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return slug


def _parse_changes(change: str | None, changes: list[str] | None) -> list[tuple[str, Any]]:
    if change is not None and changes is not None:
        raise CifarlensError("give either change= or changes=, not both")
    texts = list(changes) if changes is not None else [change or DEFAULT_CHANGE]
    if not texts:
        raise CifarlensError("a study needs at least one --change")
    parsed: list[tuple[str, Any]] = []
    for t in texts:
        kv = parse_change(t)
        if kv in parsed:  # same setting, same value: the same variant trained twice
            raise CifarlensError(f"--change {kv[0]}={kv[1]} is given twice")
        parsed.append(kv)
    return parsed


def plan_study(preset: str = "paper", change: str | None = None,
               seeds: int = DEFAULT_SEEDS, overrides: dict[str, Any] | None = None, *,
               changes: list[str] | None = None, slugs: dict[tuple[str, Any], str] | None = None
               ) -> tuple[dict[str, Any], dict[str, TrainConfig]]:
    """What a study will train, without training anything: the plan written to study.json and
    every arm's config ("baseline", then one arm per change, named by its slug). Seed s of the
    baseline and of every variant share split and initialization (all derive from the seed),
    so each variant is paired with the baseline by seed.

    `change` (one KEY=VALUE) or `changes` (several); each variant differs from the baseline in
    exactly its one setting. One change keeps the arm name "variant" (runs/variant-sN); several
    get `change_slug` names unless `slugs` (from an existing study.json) already names them."""
    if seeds < 1:
        raise CifarlensError("--seeds must be at least 1")
    base = make_config(preset, **(overrides or {}))
    if base.seed + seeds - 1 >= 2**32:  # would fail only after hours of training otherwise
        raise CifarlensError(f"--seed {base.seed} with --seeds {seeds} runs past the largest "
                             "seed, 4294967295")
    parsed = _parse_changes(change, changes)
    slugs = dict(slugs or {})
    arms: dict[str, TrainConfig] = {"baseline": base}
    listed = []
    for key, value in parsed:
        variant = dataclasses.replace(base, **{key: value})
        make_config(preset, **{**(overrides or {}), key: value})  # validates the changed value
        one_change_guard(base, variant)
        slug = slugs.get((key, value)) or (SINGLE_SLUG if len(parsed) == 1 else
                                           change_slug(key, value))
        if slug in arms:  # two values that sanitise alike (model=a:b, model=a_b)
            slug += "-" + hashlib.sha1(f"{key}={value!r}".encode()).hexdigest()[:8]
        arms[slug] = variant
        listed.append({"key": key, "baseline": getattr(base, key), "variant": value,
                       "slug": slug})
    first = listed[0]
    plan = {"preset": preset,
            # the first (or only) change: what every one-change reader of study.json knows
            "change": {k: first[k] for k in ("key", "baseline", "variant")},
            "changes": listed,
            "seeds": [base.seed + i for i in range(seeds)],
            "baseline": dataclasses.asdict(base), "variant": dataclasses.asdict(arms[first["slug"]]),
            "variants": {c["slug"]: dataclasses.asdict(arms[c["slug"]]) for c in listed}}
    return plan, arms


def recorded_changes(study: dict[str, Any]) -> list[dict[str, Any]]:
    """A study.json's changes with their slugs; a study made before several changes existed
    holds one change, whose runs are runs/variant-sN."""
    if isinstance(study.get("changes"), list):
        return study["changes"]
    return [{**study["change"], "slug": SINGLE_SLUG}]


def _change_text(c: dict[str, Any]) -> str:
    return f"{c['key']}={c['variant']}"


def study_command(out: str | Path, plan: dict[str, Any]) -> str:
    """The `cifarlens study` command that makes this study, as the report shows it: the preset,
    the seeds, every change, and every baseline setting that differs from the preset."""
    preset = plan.get("preset", "paper")
    parts = ["cifarlens", "study", "--out", str(out), "--preset", preset,
             "--seeds", str(len(plan["seeds"]))]
    for c in recorded_changes(plan):
        parts += ["--change", _change_text(c)]
    ref = dataclasses.asdict(make_config(preset))
    for key, value in plan["baseline"].items():
        if key in ref and value != ref[key]:
            parts += [f"--{key.replace('_', '-')}", "none" if value is None else str(value)]
    return shlex.join(parts)


def merge_study(out: Path, old: dict[str, Any], preset: str, seeds: int,
                 overrides: dict[str, Any] | None, change: str | None,
                 changes: list[str] | None) -> tuple[dict[str, Any], dict[str, TrainConfig],
                                                     list[str]]:
    """The plan for a study folder that already holds a study: the same baseline and seeds,
    its recorded changes (slugs and runs kept) plus any new ones. A different baseline is
    refused, listing the differences; nothing is deleted."""
    base = make_config(preset, **(overrides or {}))
    diffs = config_diff(old["baseline"], dataclasses.asdict(base))
    if diffs:
        listed = "; ".join(f"{k} {x!r} vs {y!r}" for k, x, y in diffs)
        raise CifarlensError(f"{out} holds a study with another baseline ({listed}); a change "
                             "can be added only with the same preset and settings; use another "
                             "--out for a new baseline")
    seed_list = [base.seed + i for i in range(seeds)]
    if old.get("seeds") != seed_list:
        raise CifarlensError(f"{out} holds a study over seeds {old.get('seeds')}, not "
                             f"{seed_list}; pass the same --seeds (and --seed) to resume it, or "
                             "use another --out")
    prev = recorded_changes(old)
    old_texts = [_change_text(c) for c in prev]
    new = [] if change is None and changes is None else _parse_changes(change, changes)
    old_kv = [(c["key"], c["variant"]) for c in prev]
    added = [f"{k}={v}" for k, v in new if (k, v) not in old_kv]
    plan, arms = plan_study(preset, seeds=seeds, overrides=overrides,
                            changes=old_texts + added,
                            slugs={(c["key"], c["variant"]): c["slug"] for c in prev})
    return plan, arms, added
