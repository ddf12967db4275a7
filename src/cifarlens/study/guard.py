"""What a study checks before it trains (issue 20): every run of a study folder carries the
baseline's data (the MD5 of every data file) and resolves precision, device and hardware the
same way, so a comparison that would be refused after hours of training is refused first, in
one line, with nothing written."""

from __future__ import annotations

from typing import Any

from cifarlens.data.load import load_dataset
from cifarlens.data.split import stratified_split
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.training.runtime import Dist, environment, resolve_device, resolve_precision

# The recorded environment keys whose difference makes two runs not comparable (bf16 vs fp32
# alone flipped right/wrong on 108 of 1,000 test images of one baseline).
ENV_KEYS = ("precision", "device", "device_name", "cpu_model", "gpu_model", "torch")


def env_key(env: dict[str, Any]) -> dict[str, Any]:
    # cuda:0 vs cuda:1 is the same kind of device; old runs lack the newer keys
    return {k: (str(env[k]).split(":")[0] if k == "device" else env[k])
            for k in ENV_KEYS if env.get(k) is not None}


def compare_environments(named: list[tuple[str, dict[str, Any]]]) -> None:
    """Refuse when two of the (name, recorded environment) pairs differ in any ENV_KEYS."""
    first = None
    for name, raw in named:
        env = env_key(raw if isinstance(raw, dict) else {})
        if first is None:
            first = (name, env)
            continue
        diffs = [f"{k} {first[1][k]!r} vs {env[k]!r}" for k in ENV_KEYS
                 if k in env and k in first[1] and env[k] != first[1][k]]
        if diffs:
            raise CifarlensError(
                f"refusing to compare: {first[0]} and {name} ran differently "
                f"({'; '.join(diffs)}); rerun them on one machine type with the same "
                "--device and --precision")


def planned_environment(cfg: Any) -> dict[str, Any]:
    """The environment a run of `cfg` would record if trained here now (the training loop resolves the
    same device and precision)."""

    device = resolve_device(cfg.device)
    return environment(device, resolve_precision(cfg.precision, device), Dist())


def _md5_diff(want: dict, got: dict) -> list[str]:
    a, b = want.get("md5", {}) or {}, got.get("md5", {}) or {}
    return sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))


def check_study_runs(todo: list[tuple[str, Any, Run]], out: Any) -> None:
    """Before any training or any write to study.json: the runs already in the study folder
    must have been trained on the data this study would now train on (same dataset identity,
    the split already being fixed by seed and val_fraction), and the runs still to train here
    must resolve the environment the finished ones recorded."""
    existing = [run for _, _, run in todo if run.config_path.is_file()]
    if existing:

        cfg = todo[0][1]
        data = load_dataset(cfg.dataset, cfg.data_dir, progress=False)
        got = data.identity or {}
        for run in existing:
            want = run.config.get("data_identity")
            if not isinstance(want, dict) or not want or not got or want == got:
                continue
            diff = _md5_diff(want, got)
            what = f"files {', '.join(diff)} differ" if diff else "another dataset or source"
            raise CifarlensError(
                f"refusing to train: {out} holds {run.name}, trained on other data than "
                f"{data.folder} ({what}); every run of a study uses its baseline's data: pass "
                "the --data-dir the study was made with, or use another --out")
    named = [(run.name, run.config.get("environment", {})) for run in existing]
    planned = {id(cfg): cfg for _, cfg, run in todo if not run.is_done()}
    if planned and named:
        for cfg in planned.values():
            named.append((f"a run to train here ({cfg.device}, {cfg.precision})",
                          planned_environment(cfg)))
    compare_environments(named)


def check_split(cfg: Any) -> None:
    """Before the study folder is created: the baseline's split leaves training images (a
    --val-fraction of 0.999 holds every image of a small class out)."""

    data = load_dataset(cfg.dataset, cfg.data_dir, progress=False)
    train_idx, _ = stratified_split(data.train_y, cfg.val_fraction, cfg.seed)
    if len(train_idx) == 0:
        raise CifarlensError(f"--val-fraction {cfg.val_fraction} leaves no training images "
                             f"({len(data.train_y)} in {data.folder}); use a smaller fraction")
