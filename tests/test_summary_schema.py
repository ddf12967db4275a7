"""summary.json's one schema (summary_schema.py): the study checks what it writes strictly, the
report drops what it cannot read (issue 9: one schema shared by producer and reader)."""

from __future__ import annotations

import pytest

from cifarlens.errors import CifarlensError
from cifarlens.study.schema import SUMMARY_KEYS, check_summary, readable_summary


def _minimal() -> dict:
    values = {dict: {}, list: [], str: "x", int: 3}
    s = {k: values[types[0]] for k, (types, required) in SUMMARY_KEYS.items() if required}
    s["models"] = {"baseline": {}, "variant": {}}
    return s


def test_a_summary_with_every_required_key_passes():
    s = _minimal()
    assert check_summary(s, "s") is s
    assert check_summary({**s, "newer_key": 1}, "s")  # later versions may add keys


@pytest.mark.parametrize("key", [k for k, (_, req) in SUMMARY_KEYS.items() if req])
def test_each_missing_required_key_is_named(key):
    s = _minimal()
    del s[key]
    with pytest.raises(CifarlensError, match=f"no '{key}'"):
        check_summary(s, "STUDY/summary.json")


@pytest.mark.parametrize("key, value, want", [
    ("models", [], "'models' must be an object"),
    ("num_classes", True, "'num_classes' must be an integer"),   # bool is not a number
    ("num_classes", 3.0, "'num_classes' must be an integer"),
    ("seeds", {"0": 1}, "'seeds' must be a list"),
    ("data_name", 5, "'data_name' must be a string or null"),
])
def test_a_wrong_type_is_one_line_naming_the_key(key, value, want):
    with pytest.raises(CifarlensError, match=want) as e:
        check_summary({**_minimal(), key: value}, "S")
    assert "\n" not in str(e.value)


def test_both_arms_are_required():
    with pytest.raises(CifarlensError, match="'models' has no 'variant' object"):
        check_summary({**_minimal(), "models": {"baseline": {}}}, "S")
    with pytest.raises(CifarlensError, match="expected a JSON object, got a list"):
        check_summary([], "S")


def test_the_reader_drops_what_it_cannot_read_and_keeps_the_rest():
    s = {**_minimal(), "models": "junk", "figures": [], "newer": {"a": 1}, "title": "t"}
    r = readable_summary(s, "S")
    assert "models" not in r and "figures" not in r
    assert r["newer"] == {"a": 1} and r["title"] == "t" and r["seeds"] == []
    with pytest.raises(CifarlensError, match="not a study summary"):
        readable_summary("text", "S")
