"""scripts/*.sh: the venv lives in the checkout, the user's relative paths resolve where they stand.

The scripts run here on a copy of the checkout's scripts with a fake .venv whose install stamp is
current, so no install runs (and the shared venv is never touched); a fake `python` that fails
would show one that did."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _exe(path: Path, text: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_checkout(tmp_path):
    repo = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("*.py"))
    (repo / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    bin_ = repo / ".venv" / "bin"
    bin_.mkdir(parents=True)
    _exe(bin_ / "python", 'echo "python must not run: $*" >&2; exit 3\n')
    _exe(bin_ / "cifarlens", 'echo "cwd=$PWD"; echo "args=$*"\n')
    # the stamp env.sh compares with: "$(cat pyproject.toml) $TORCH_SPEC $CIFARLENS_EXTRAS"
    (repo / ".venv" / ".cifarlens-installed").write_text("[project]\nname = 'fake' torch-x ")
    return repo


def test_study_script_resolves_relative_paths_where_the_user_stands(fake_checkout, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    env = {**os.environ, "TORCH_SPEC": "torch-x", "CIFARLENS_EXTRAS": ""}
    p = subprocess.run(["bash", str(fake_checkout / "scripts" / "study.sh"), "--data-dir", "data",
                        "--out", "study"], cwd=user, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"cwd={user}", "args=study --data-dir data --out study"]
    assert not (fake_checkout / "study").exists() and not (fake_checkout / "data").exists()


def test_readme_images_are_the_studys_own_figures(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_images", ROOT / "scripts" / "readme_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    figures = tmp_path / "study" / "figures"
    figures.mkdir(parents=True)
    out = tmp_path / "images"
    out.mkdir()
    (out / "demo_tracking.png").write_bytes(b"old")
    with pytest.raises(SystemExit, match="no baseline Grad-CAM"):
        mod.main([str(tmp_path / "study"), "--out", str(out)])
    (figures / "baseline-s0_figures_gradcam_test.png").write_bytes(mod.PNG + b"cam")
    with pytest.raises(SystemExit, match="gradcam_tracking.png is missing"):
        mod.main([str(tmp_path / "study"), "--out", str(out)])
    assert (out / "demo_tracking.png").read_bytes() == b"old"  # nothing replaced
    (figures / "gradcam_tracking.png").write_bytes(mod.PNG + b"track")
    assert mod.main([str(tmp_path / "study"), "--out", str(out), "--no-screenshot"]) == 0
    assert (out / "demo_tracking.png").read_bytes() == mod.PNG + b"track"
    assert (out / "demo_gradcam.png").read_bytes() == mod.PNG + b"cam"


def test_readme_first_screen_is_chromiums_1366x768_view_of_the_report(tmp_path):
    import importlib.util
    import shutil
    import struct

    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but `chromium` is not installed")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI runs this test")
    spec = importlib.util.spec_from_file_location("readme_images", ROOT / "scripts" / "readme_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    study = tmp_path / "study"
    study.mkdir()
    (study / "report.html").write_text("<!doctype html><title>r</title><h1>first screen</h1>")
    mod.first_screen(study, tmp_path / "shot.png")
    png = (tmp_path / "shot.png").read_bytes()
    assert png[:8] == mod.PNG
    assert struct.unpack(">II", png[16:24]) == (1366, 768)  # IHDR: width, height
