"""`--help` of every command, and the training flags generated from TrainConfig."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from cifarlens.cli import build_parser, main
from cifarlens.cli.args import train_overrides
from cifarlens.training.config import PRESETS, SETTING_HELP, TrainConfig, make_config


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, parser) for the top-level parser and every sub-parser, read from the parser."""
    yield words, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _commands(sp, words + (name,))


COMMANDS = list(_commands(build_parser()))


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


@pytest.mark.parametrize("words,parser", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_a_description_an_example_and_documented_options(words, parser):
    assert parser.description and parser.description.strip(), words
    assert parser.description.strip().splitlines()[0].strip(), words
    examples = [line.strip() for line in (parser.epilog or "").splitlines()]
    assert any(line.startswith("cifarlens") for line in examples), f"{words}: no example"
    # the example names this command (not another one's line pasted in)
    assert any(line.startswith(" ".join(("cifarlens",) + words)) for line in examples), words
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction |
                      argparse._VersionAction):
            continue
        text = _help_of(parser, action)
        assert text and text.strip(), f"{words} {action.dest}: no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert str(action.default) in text, f"{words} {action.dest}: default not in {text!r}"
    # and argparse can render it (a bad %-format in any help would raise here)
    assert parser.format_help()


def test_help_is_shown_with_the_example_through_main(capsys):
    for words, _ in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and out.strip(), words


def _train_parser(name: str) -> argparse.ArgumentParser:
    return dict((" ".join(w), p) for w, p in COMMANDS)[name]


@pytest.mark.parametrize("command", ["train", "study"])
def test_every_config_field_has_a_flag_that_reaches_the_config(command):
    parser = _train_parser(command)
    flags = {s for a in parser._actions for s in a.option_strings}
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(SETTING_HELP) == set(fields)  # a new field needs its help line
    preset_keys = {k for p in PRESETS.values() for k in p}
    assert preset_keys <= set(fields)
    for name in fields:
        assert "--" + name.replace("_", "-") in flags, name
    # each preset key, given a value different from every preset's, reaches the config
    values = {"model": "resnet18", "epochs": "3", "batch_size": "32", "lr": "0.013",
              "warmup_epochs": "0.25", "train_limit": "77", "momentum": "0.8",
              "weight_decay": "0.001", "label_smoothing": "0.05", "augment": "cutout",
              "cutout_size": "5", "mixup_alpha": "0.3", "cutmix_alpha": "0.4", "seed": "9",
              "val_fraction": "0.3", "device": "cpu", "precision": "fp32", "eval_batch_size": "17",
              "compile": "off", "dataset": "cifar10", "data_dir": "somewhere"}
    assert set(values) == set(fields)  # the test itself covers every field
    extra = ["--out", "x"] if command == "train" else []
    for preset in PRESETS:
        for name, raw in values.items():
            a = parser.parse_args(["--preset", preset, "--" + name.replace("_", "-"), raw, *extra])
            cfg = make_config(a.preset, **train_overrides(a))
            want = type(getattr(TrainConfig(), name) if getattr(TrainConfig(), name) is not None
                        else 0)(raw) if name not in ("data_dir",) else raw
            assert getattr(cfg, name) == want, (preset, name)
            # and nothing else moved from what the preset sets
            base = dataclasses.asdict(make_config(preset))
            moved = {k for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
            assert moved == {name}, (preset, name, moved)


def test_train_limit_none_undoes_the_quick_presets_limit():
    parser = _train_parser("train")
    a = parser.parse_args(["--preset", "quick", "--train-limit", "none", "--out", "x"])
    assert make_config("quick").train_limit == 10_000
    assert make_config(a.preset, **train_overrides(a)).train_limit is None


def test_study_help_lists_the_settings_change_accepts():
    from cifarlens.study.plan import PAIRING_SETTINGS, parse_change
    from cifarlens.training.config import TRAINING_SETTINGS

    parser = _train_parser("study")
    change = next(a for a in parser._actions if "--change" in a.option_strings)
    listed = _help_of(parser, change).split("KEY is one of:")[1].replace(" ", "").split(",")
    assert listed == [k for k in TRAINING_SETTINGS if k not in PAIRING_SETTINGS]
    assert " ".join(parser.format_help().split()).count(", ".join(listed[:3])) == 1
    for key in listed:  # each listed key is one the study accepts
        parse_change(f"{key}={'cutout' if key == 'augment' else 'resnet18' if key == 'model' else 1}")


def test_help_states_no_times_of_its_own_and_its_reference_exists():
    """Times live in one measured README table; --help only points there."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "\n### How long it takes\n" in readme
    duration = re.compile(r"~?\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?|h|hours?)\b")
    pointers = 0
    for words, parser in COMMANDS:
        text = " ".join(parser.format_help().split())
        assert not duration.search(text), (words, duration.search(text))
        pointers += "'How long it takes'" in text
    assert pointers >= 2  # at least train (--preset) and demo refer to the table


def test_data_synth_takes_data_dir_like_every_command_and_out_as_its_older_name():
    parser = build_parser()
    for flag in ("--data-dir", "--out"):
        assert parser.parse_args(["data", "synth", flag, "d1"]).data_dir == "d1"
    for words in (["train", "--out", "r"], ["study"], ["data", "verify"], ["data", "info"]):
        assert parser.parse_args([*words, "--data-dir", "d2"]).data_dir == "d2", words
