"""torchrun's environment checked before any work (issue 11), and the NCCL set-up order.

A bad WORLD_SIZE / RANK / LOCAL_RANK, or WORLD_SIZE > 1 without the launcher's MASTER_ADDR and
MASTER_PORT, is a one-line CifarlensError from `cifarlens train` before data is read or a run
folder is made: never a traceback, and never after a finished training (cmd_train reads RANK).
"""

from __future__ import annotations

import pytest
import torch

from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.training.runtime import Dist, dist_env, init_distributed

DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for v in DIST_VARS:
        monkeypatch.delenv(v, raising=False)


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' must be an integer >= 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' must be an integer >= 1"),
    ({"RANK": "foo"}, "RANK='foo' must be an integer >= 0"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1' must be an integer >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 but MASTER_ADDR, MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     "RANK=2 must be below WORLD_SIZE=2"),
    ({"RANK": "1"}, "RANK=1 must be below WORLD_SIZE=1"),
])
def test_bad_launcher_environment_is_one_line_before_any_work(env, message, monkeypatch, tmp_path,
                                                              capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(CifarlensError, match=message.replace("(", r"\(")):
        dist_env()
    out = tmp_path / "run"
    # no data at --data-dir: had the check come later, the error would be a different one
    rc = main(["train", "--data-dir", str(tmp_path / "nothing"), "--preset", "smoke",
                   "--device", "cpu", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and not out.exists()


def test_plain_environment_is_one_process(monkeypatch):
    assert dist_env() == (1, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", " ")
    assert dist_env() == (1, 0, 0) and init_distributed("cpu") == Dist()


def test_cuda_device_is_set_before_the_nccl_process_group(monkeypatch):
    import torch.distributed as dist

    calls = []
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost",
                 "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    d = init_distributed("auto")
    assert calls == [("set_device", 1), ("init", "nccl")]
    assert (d.rank, d.world, d.local_rank) == (1, 2, 1)
    calls.clear()
    init_distributed("cpu")  # gloo on the CPU: no device to set
    assert calls == [("init", "gloo")]
