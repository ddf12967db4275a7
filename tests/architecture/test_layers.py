"""The house plan, checked: modules import only downwards along the data flow, there is no
import cycle (imports inside functions counted), and files and functions stay a size a reader
can hold in their head (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "cifarlens"

# Each module may import modules of its own layer or lower ones, never higher ones. The first
# matching prefix decides a module's layer (docs/architecture.md, "What each package may import").
LAYERS: list[tuple[str, ...]] = [
    ("cifarlens.errors", "cifarlens._version", "cifarlens._text", "cifarlens._defaults",
     "cifarlens._mpl", "cifarlens._console", "cifarlens._io", "cifarlens.csvfile",
     "cifarlens._units"),
    ("cifarlens.data",),
    ("cifarlens.analysis",),
    ("cifarlens.figures",),
    ("cifarlens.cam", "cifarlens.training.config", "cifarlens.training.models",
     "cifarlens.training.model_check", "cifarlens.training.augment", "cifarlens.training.runtime",
     "cifarlens.training.batches", "cifarlens.training.complexity", "cifarlens.training"),
    ("cifarlens.runs",),
    ("cifarlens.training.loop", "cifarlens.training.writer"),
    ("cifarlens.stages",),
    ("cifarlens.pipeline",),
    ("cifarlens.study",),
    ("cifarlens.report",),
    ("cifarlens.cli", "cifarlens.__main__", "cifarlens"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} has no layer in LAYERS"
    return best[0]


def imports(module: str) -> set[str]:
    """Every cifarlens module `module` imports, at its top or inside a function; imports only
    a type checker sees (`if TYPE_CHECKING:`) are not dependencies at run time."""
    tree = ast.parse(MODULES[module].read_text())
    typing_only = {id(x) for n in ast.walk(tree) if isinstance(n, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(n.test) for x in ast.walk(n)}
    out = set()
    for n in ast.walk(tree):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("cifarlens"):
            assert n.level == 0, f"{module}: relative import"
            for a in n.names:
                full = f"{n.module}.{a.name}"
                out.add(full if full in MODULES else n.module)
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.startswith("cifarlens")}
    return {m for m in out if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_import_goes_down_the_data_flow():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in GRAPH.items() for d in deps
           if layer(d) > layer(m) and m != "cifarlens"]  # the package's lazy API table
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [m, d]))
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 120
MAX_PUBLIC_PARAMETERS = 8


def _functions():
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield m, n


def test_files_stay_under_700_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines()))
            > MAX_FILE_LINES}
    assert not long, long


def test_functions_stay_under_120_lines():
    long = [f"{m}.{f.name}: {f.end_lineno - f.lineno + 1}" for m, f in _functions()
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_public_functions_take_at_most_8_parameters():
    many = []
    for m, f in _functions():
        a = f.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        n = len([x for x in names if x not in ("self", "cls")])
        if not f.name.startswith("_") and n > MAX_PUBLIC_PARAMETERS:
            many.append(f"{m}.{f.name}: {n}")
    assert not many, many


def test_rendering_a_report_never_loads_torch(tmp_path):
    """The report package reads runs and summaries without torch (1.5 s of import on a 2-core
    machine): why runs.py, study/browse.py and study/browse_neighbours.py import it inside the
    functions that need it. Rendering a real summary (the v1 fixture) runs every section builder."""
    import os
    import subprocess
    import sys

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "summary_v1.json"
    study = tmp_path / "study"
    study.mkdir()
    (study / "summary.json").write_text(fixture.read_text())
    code = ("import sys\n"
            "from cifarlens.report.render import render_report\n"
            f"render_report({str(study)!r})\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (study / "report.html").stat().st_size > 10_000
