"""Bad input from the command line: no traceback, only a one-line error and a non-zero exit.

Hypothesis builds argument lists from the parser itself (every sub-command `cifarlens --help`
lists, each option with its own choices and type), mixing valid and invalid values, unknown
flags, mistyped or missing sub-commands, missing required arguments and odd paths, and calls
`cifarlens.cli.main` in this process (fast: no interpreter start-up per example).

Nothing real may start: $CIFARLENS_DATA points at a folder that does not exist, downloads fail
at once as if offline, and the two steps that would compute without reading any file (rendering
images for `data synth`/`demo`, building the model for `complexity`) raise _WouldWork, which
counts as "the arguments were accepted". Paths are relative to a temporary folder, under a
regular file, or in /proc, so nothing is written outside the test's folder.

CIFARLENS_FUZZ_EXAMPLES=N (default 150) sets how many argument lists are tried.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cifarlens.cli import build_parser, main
from cifarlens.cli.args import finite_float, nonneg_int, positive_int
from cifarlens.errors import CifarlensError
from cifarlens.training.config import TRAINING_SETTINGS

EXAMPLES = int(os.environ.get("CIFARLENS_FUZZ_EXAMPLES", "150"))
PATH_DESTS = {"out", "data_dir", "run", "study"}
# Commands that may print progress lines before a run-time error (the error is still one line).
LOGS_PROGRESS = {"train", "study", "demo"}


class _WouldWork(Exception):
    """Raised where a command would start real computation: its arguments were accepted."""


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(sub-command words, parser) for every runnable command, read from the parser itself."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sp in subs[0].choices.items():
        yield from _leaves(sp, prefix + (name,))


PARSER = build_parser()
LEAVES = sorted(_leaves(PARSER), key=lambda x: x[0])
COMMAND_WORDS = sorted({w for words, _ in LEAVES for w in words})


def _choice_sets() -> dict[str, list[list[str]]]:
    """argparse's name of each argument with choices -> the choice lists it may have."""
    out: dict[str, list[list[str]]] = {}
    parsers = [PARSER]
    for p in parsers:  # grows while walking: every parser and sub-parser once
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                parsers += [sp for sp in a.choices.values() if sp not in parsers]
            if a.choices:
                name = argparse._get_action_name(a)
                out.setdefault(name, []).append([str(c) for c in a.choices])
    return out


CHOICES = _choice_sets()

# --- values ---------------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20)  # argv can never hold NUL; surrogates only from undecodable bytes
INTS = st.one_of(
    st.integers(-5, 10**7).map(str),
    st.integers().map(str),
    st.sampled_from(["0", "-1", "", " 3", "3.0", "1e3", "0x10", "\u0663", "9" * 5000,
                     str(2**64), "nan", "-"]),
    TEXT,
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "", "1_000", "0x1p3", "0.05", "1"]),
    TEXT,
)
_PATH_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/")
PATHS = st.one_of(
    st.sampled_from(["", ".", "missing", "missing/deeper", "blocker", "blocker/x",
                     "/proc/cifarlens-fuzz", "x" * 300, "\u00fcn\u00ef c\u00f8d\u00e9 \u2713",
                     "-", " ", "a\nb", "a\x1b[31mb", "~nobody/x", "--out"]),
    st.text(_PATH_CHARS, min_size=1, max_size=20).map(lambda s: "p" + s),  # relative, no ".."
)
CHANGES = st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*TRAINING_SETTINGS, "seed", ""]),
                    st.one_of(INTS, FLOATS, TEXT)) | TEXT
JUNK = st.one_of(st.sampled_from(["--bogus", "-x", "--", "-", "--ep", "--out=", "-h", "--help",
                                  "--version", "train", "data", "--epochs=-1"]), TEXT)


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    if action.dest in PATH_DESTS:
        return PATHS
    if action.dest == "change":
        return CHANGES
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), TEXT)
    t = action.type
    if t in (positive_int, nonneg_int) or "int_range" in getattr(t, "__qualname__", ""):
        return INTS
    if t is finite_float:
        return FLOATS
    return TEXT


@st.composite
def argvs(draw) -> list[str]:
    words, parser = draw(st.sampled_from(LEAVES))
    argv = list(words)
    r = draw(st.integers(0, 19))
    if r == 0:  # a mistyped (sub-)command
        argv[draw(st.integers(0, len(argv) - 1))] = draw(
            st.one_of(TEXT, st.sampled_from(["trian", "DATA", "", "-"])))
    elif r == 1:  # a missing sub-command, or none at all
        argv = argv[:-1]
    actions = [a for a in parser._actions
               if not isinstance(a, argparse._HelpAction | argparse._VersionAction)]
    chosen = draw(st.lists(st.sampled_from(actions), max_size=6)) if actions else []
    # required options and positionals are usually there, sometimes missing
    for a in actions:
        if (a.required or not a.option_strings) and a not in chosen and draw(st.integers(0, 4)):
            chosen.append(a)
    for a in chosen:
        if a.nargs == 0:  # a flag
            argv.append(draw(st.sampled_from(a.option_strings)))
            continue
        n = draw(st.integers(1, 3)) if a.nargs == "+" else 1
        values = [draw(_value(a)) for _ in range(n)]
        if not a.option_strings:
            argv += values
        elif n == 1 and draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
            argv.append(f"{draw(st.sampled_from(a.option_strings))}={values[0]}")
        else:
            argv += [draw(st.sampled_from(a.option_strings)), *values]
    for junk in draw(st.lists(JUNK, max_size=2)):
        argv.insert(draw(st.integers(0, len(argv))), junk)
    return argv


# --- running and judging one argument list --------------------------------------------------------


def _main(argv: list[str]) -> tuple[int | str | None, str, str, bool]:
    out, err = io.StringIO(), io.StringIO()
    work = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except _WouldWork:
            rc, work = 0, True
    return rc, out.getvalue(), err.getvalue(), work


def _judge(argv: list[str], rc, out: str, err: str, work: bool) -> None:
    where = f"argv={argv!r}\nexit={rc!r}\nstderr={err!r}"
    assert "Traceback" not in err + out, where
    if work or rc == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, f"failed silently\n{where}"
    last = lines[-1]
    assert last.startswith("cifarlens"), where
    if rc == 2:  # argparse: the usage error alone
        assert len(lines) == 1 and ": error: " in last and last.endswith("(see --help)"), where
    else:
        assert rc == 1 and last.startswith("cifarlens: error: "), where
        if len(lines) > 1:  # progress printed before the error, never a second error
            assert argv and argv[0] in LOGS_PROGRESS, where
            assert not any(line.startswith("cifarlens") for line in lines[:-1]), where
    if m := re.search(r"argument (.+?): invalid choice: ", last):
        assert any(all(c in last for c in cs) for cs in CHOICES.get(m.group(1), [])), where


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A cwd of our own, no data, no network, and real work intercepted (see module doc)."""
    import cifarlens.data.download
    import cifarlens.data.load
    import cifarlens.data.synth
    import cifarlens.training.models

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "blocker").write_text("a regular file, so blocker/x can never be created")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("CIFARLENS_DATA", str(tmp_path / "no-data"))

    def offline(url, *a, **k):
        raise CifarlensError(f"cannot download {url} (offline test)")

    def would_work(*a, **k):
        raise _WouldWork

    monkeypatch.setattr(cifarlens.data.download, "fetch", offline)
    monkeypatch.setattr(cifarlens.data.synth, "render_images", would_work)
    monkeypatch.setattr(cifarlens.training.models, "build_model", would_work)
    monkeypatch.setattr(cifarlens.data.load, "read_folder", would_work)  # never reached: no data
    return cwd


def test_every_listed_command_is_fuzzed():
    words = {" ".join(w) for w, _ in LEAVES}
    assert {"train", "complexity", "data synth", "data info", "data verify", "data download",
            "evaluate", "failures", "explain", "study", "report"} <= words, words


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(argv=argvs())
def test_fuzzed_arguments_give_one_line_errors_never_a_traceback(sandbox, argv):
    _judge(argv, *_main(argv))


# Hand-picked cases: each names what the message must say.
CASES = [
    (["train"], 2, "the following arguments are required: --out"),
    (["trian"], 2, "invalid choice: 'trian' (choose from 'train', 'complexity', 'data'"),
    (["data"], 2, "the following arguments are required: ACTION"),
    (["train", "--out", "r", "--model", "resnet"], 2, "choose from: vgg, small, resnet18"),
    (["train", "--out", "r", "--model", "no_such_mod_q:f"], 1, "cannot import module 'no_such_mod_q'"),
    (["train", "--out", "r", "--lr", "nan"], 2, "expected a finite number, got 'nan'"),
    (["train", "--out", "r", "--lr", "1e400"], 2, "expected a finite number, got '1e400'"),
    (["train", "--out", "r", "--epochs", "-1"], 2, "expected a positive integer, got '-1'"),
    (["train", "--out", "r", "--lr", "-inf"], 2, "argument --lr: expected one argument"),
    (["train", "--out", "r", "--epochs=-1"], 2, "expected a positive integer, got '-1'"),
    (["train", "--out", "r", "--batch-size", "9" * 5000], 2, "expected a positive integer"),
    (["train", "--out", "r", "--seed", str(2**64)], 1, "--seed must be an integer from 0 to"),
    (["train", "--out", "r", "--label-smoothing", "1"], 1, "--label-smoothing must be in [0, 1)"),
    (["train", "--out", "blocker/r"], 1, "cannot create blocker/r: Not a directory"),
    (["train", "--out", "r", "--bogus", "x\ny\x1b[31m"], 2,
     "unrecognized arguments: --bogus x\\ny\\x1b[31m"),
    (["study", "--seeds", "99999999999"], 2, "expected an integer from 1 to 1000"),
    (["study", "--out", "s", "--change", "nonsense"], 1, "--change must look like KEY=VALUE"),
    (["study", "--out", "s", "--change", "seed=3"], 1, "'seed' is not a training setting"),
    (["data", "synth", "--out", "d", "--train-per-class", str(10**9)], 2, "from 1 to 10000"),
    (["data", "synth", "--out", "d", "--label-noise", "2"], 1, "label noise must be between"),
    (["data", "verify", "--data-dir", "missing\nline"], 1, "/cwd/missing\\nline: put"),
    (["evaluate", "missing"], 1, "missing is not a cifarlens run (no config.json)"),
    (["explain", "missing", "--failures", "3", "--all"], 2, "not allowed with argument"),
    (["report", "missing"], 1, "missing is not a finished study (no summary.json)"),
]


@pytest.mark.parametrize(("argv", "code", "says"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_arguments_are_named_in_one_line(sandbox, argv, code, says):
    rc, out, err, work = _main(argv)
    assert not work and rc == code, (rc, err)
    assert says in err, err
    _judge(argv, rc, out, err, work)
    assert not (sandbox / "r" / "config.json").exists()  # a refused train leaves no run behind
