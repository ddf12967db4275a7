"""Fixtures for the engine tests: tiny generated data, the smoke study's jobs trained one after
another (the reference every engine must equal bit for bit), and the network-namespace gate of
the Ray tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from netns import child_env, netns_refusal


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory) -> Path:
    """CIFAR-10-format generated data, 20 train / 5 test images per class: a smoke run of 2
    epochs trains on it in about a second."""
    from cifarlens.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("engine_data")
    write_synthetic(root, "cifar10", train_per_class=20, test_per_class=5, seed=0)
    return root


@pytest.fixture(scope="session")
def reference(tmp_path_factory, engine_data) -> dict[str, np.ndarray]:
    """Test logits of the study's 4 runs trained one after another in one fresh process with
    1 thread each: what the local engine does."""
    import cluster_jobs as E

    tmp = tmp_path_factory.mktemp("reference")
    code = ("import cluster_jobs as E, sys; "
            "E.run_sequentially(E.study_jobs(sys.argv[1], sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp / "study"), str(engine_data)],
                          env=child_env(tmp), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {j.name: E.logits_of(j.run_dir) for j in E.study_jobs(tmp / "study", engine_data)}


@pytest.fixture(scope="session")
def netns() -> None:
    """Ray binds every interface: its tests run only where a loopback-only namespace can be
    made (root, or a user namespace); elsewhere they skip and say why."""
    why = netns_refusal()
    if why:
        pytest.skip(why)
