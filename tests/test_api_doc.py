"""docs/api.md's examples run as written, in order, from an empty folder: the public API is
what the page says (issue 19: a deliberate public API, one example each)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

import cifarlens

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
README = ROOT / "README.md"


def _blocks(path: Path = DOC) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_every_public_name_has_an_example_and_help_lists_it():
    text = "\n".join(_blocks())
    for name in cifarlens.__all__:
        if name != "__version__" and name != "demo":  # the demo takes minutes: named, not run
            assert f"cifarlens.{name}(" in text or f"cifarlens.{name}." in text, name
    assert "cifarlens.demo(" in DOC.read_text()
    doc = __import__("pydoc").render_doc(cifarlens)
    assert all(n in doc for n in cifarlens.__all__ if n != "__version__")


def test_the_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            for block in _blocks():
                exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
            # the README's example, on the run the page trained
            (readme,) = _blocks(README)
            exec(compile(readme, str(README), "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    printed = out.getvalue().splitlines()
    assert printed[0] == "(5000, 3, 32, 32) 100 generated"
    assert "TrainConfig small 1" in printed and "vgg 50 128" in printed
    assert "10462756" in printed
    assert "torch.Size([8, 32, 32]) (32, 32, 3) uint8" in printed
    assert (tmp_path / "studies" / "s1" / "report.html").is_file()
    assert printed[-1].startswith("augment ") and printed[-1].endswith(" report.html")
    assert namespace["rgb"].shape == (32, 32, 3)  # the README's overlay
