"""`cifarlens study --engine local|processes|ray|slurm` and the Ray and Slurm options: the
engine each spelling builds, one line for what is missing here or does not fit together
(checked before the study's plan; no Ray instance or Slurm is started)."""

from __future__ import annotations

import sys

import pytest

from cifarlens.cli import build_parser, main
from cifarlens.cli.engine import make_engine
from cifarlens.errors import CifarlensError
from cifarlens.study.engines import ray as ray_engine
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.engines.processes import ProcessesEngine
from cifarlens.study.engines.ray import RayEngine
from cifarlens.study.engines.slurm import SlurmEngine


def engine(*args: str):
    return make_engine(build_parser().parse_args(["study", *args]))


def test_each_spelling_builds_its_engine(monkeypatch, tmp_path):
    assert type(engine()) is LocalEngine and type(engine("--engine", "local")) is LocalEngine
    p = engine("--jobs", "3")  # --jobs N stays the spelling of --engine processes
    assert type(p) is ProcessesEngine and p.jobs == 3
    assert engine("--engine", "processes", "--jobs", "2").jobs == 2
    monkeypatch.setattr(ray_engine, "import_ray", lambda: None)  # installed or not
    r = engine("--engine", "ray", "--ray-address", "auto", "--threads", "3")
    assert type(r) is RayEngine and (r.address, r.threads, r.name) == ("auto", 3, "ray")
    assert engine("--engine", "ray").address is None  # an instance of the study's own
    assert engine("--engine", "ray").accelerator_type is None
    assert engine("--engine", "ray", "--ray-accelerator", "H100").accelerator_type == "H100"
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    pytest.importorskip("submitit", reason='submitit is not installed: pip install '
                                           '"cifarlens[slurm]"')
    s = engine("--engine", "slurm", "--slurm-partition", "gpu", "--slurm-time", "1-12:00")
    assert type(s) is SlurmEngine and s.name == "slurm"
    assert (s.partition, s.gpus_per_run, s.time, s.timeout_min) == ("gpu", 1, "1-12:00", 2160)
    cpu = engine("--engine", "slurm", "--device", "cpu")
    assert (cpu.partition, cpu.gpus_per_run, cpu.time) == (None, 0, "4:00:00")
    assert engine("--engine", "slurm", "--slurm-gpus-per-run", "2").gpus_per_run == 2


@pytest.mark.parametrize("args,message", [
    (["--ray-address", "auto"], "--ray-address is an option of --engine ray, not of --engine "
                                "local"),
    (["--jobs", "2", "--ray-accelerator", "H100"], "--ray-accelerator is an option of --engine "
                                                   "ray, not of --engine processes"),
    (["--engine", "ray", "--slurm-time", "10"], "--slurm-time is an option of --engine slurm, "
                                                "not of --engine ray"),
    (["--jobs", "2", "--slurm-partition", "gpu"], "--slurm-partition is an option of --engine "
                                                  "slurm, not of --engine processes"),
    (["--engine", "ray", "--jobs", "2"], "--jobs is the number of processes of --engine "
                                         "processes; --engine ray places the runs itself"),
])
def test_options_of_another_engine_are_refused(args, message):
    with pytest.raises(CifarlensError) as e:
        engine(*args)
    assert str(e.value) == message


def test_missing_ray_submitit_or_slurm_is_one_line_before_the_study(monkeypatch, tmp_path,
                                                                    capsys):
    out = tmp_path / "study"
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["study", "--engine", "ray", "--out", str(out)]) == 1
    assert capsys.readouterr().err == ('cifarlens: error: Ray is not installed here: pip '
                                       'install "cifarlens[ray]"\n')
    real = sys.modules.get("submitit")  # imported with the Slurm engine, where installed
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(["study", "--engine", "slurm", "--out", str(out)]) == 1
    assert capsys.readouterr().err == ('cifarlens: error: submitit is not installed here: pip '
                                       'install "cifarlens[slurm]"\n')
    if real is None:
        pytest.skip('submitit is not installed: pip install "cifarlens[slurm]"')
    monkeypatch.setitem(sys.modules, "submitit", real)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main(["study", "--engine", "slurm", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cifarlens: error: no Slurm here (sbatch is not on PATH)")
    assert err.count("\n") == 1
    assert main(["study", "--engine", "slurm", "--slurm-time", "1h", "--out", str(out)]) == 1
    assert "--slurm-time '1h': use minutes, HH:MM:SS or D-HH:MM:SS" in capsys.readouterr().err
    assert not out.exists()  # refused before the study folder was made
