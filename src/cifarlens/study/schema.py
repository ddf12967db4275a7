"""The shape of STUDY/summary.json, shared by its producer (`study.build_summary`, checked
before it is written) and its reader (the report, checked when it is read): one place that
names every top-level key, its type, and whether a summary must have it.

The producer checks strictly (`check_summary`: a bug in the study stops before the file is
written). The reader renders whatever it can of a hand-edited or damaged summary, so it asks
`readable_summary`: a summary that is not a JSON object is refused with one line, and a key of
the wrong type is dropped, so every section sees either the schema's type or nothing.
"""

from __future__ import annotations

from typing import Any

from cifarlens.errors import CifarlensError

# key: (JSON types allowed, required). bool is not a number here.
SUMMARY_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "title": ((str,), False),
    "created": ((str,), False),
    "dataset": ((str,), True),
    "data_source": ((str,), True),
    "num_classes": ((int,), True),
    "data_name": ((str, type(None)), False),
    "split": ((dict,), True),
    "normalization": ((dict,), False),
    "change": ((dict,), True),
    "config": ((dict,), True),
    "seeds": ((list,), True),
    "models": ((dict,), True),
    "comparison": ((dict,), True),
    "failures": ((dict,), True),
    "explain": ((dict,), False),
    "figures": ((dict,), True),
    "variants": ((list,), False),  # studies from before several changes lack it
    "ablation": ((dict,), False),  # 2+ changes only
    "environment": ((dict,), True),
    "browse": ((dict,), False),
    "timing": ((dict,), False),
    "command": ((str,), False),
}
ARMS = ("baseline", "variant")

_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
          float: "a number", type(None): "null"}


def check_summary(summary: Any, where: str) -> dict[str, Any]:
    """`summary` if it has the study summary's shape, else one CifarlensError line naming the
    first key that is missing or of the wrong type. Unknown keys are allowed (newer versions)."""
    if not isinstance(summary, dict):
        raise CifarlensError(f"{where} is not a study summary: expected a JSON object, got "
                             f"{_NAMES.get(type(summary), type(summary).__name__)}")
    for key, (types, required) in SUMMARY_KEYS.items():
        if key not in summary:
            if required:
                raise CifarlensError(f"{where} is not a study summary: no '{key}'")
            continue
        value = summary[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(_NAMES[t] for t in types)
            raise CifarlensError(f"{where} is not a valid study summary: '{key}' must be {want}")
    for arm in ARMS:
        if not isinstance(summary["models"].get(arm), dict):
            raise CifarlensError(f"{where} is not a valid study summary: 'models' has no "
                                 f"'{arm}' object")
    return summary


def readable_summary(summary: Any, where: str) -> dict[str, Any]:
    """What the report renders from: `summary` without the keys whose type is not the
    schema's (those sections are left out), or one CifarlensError line when it is not a JSON
    object at all."""
    if not isinstance(summary, dict):
        raise CifarlensError(f"{where} is not a study summary: expected a JSON object, got "
                             f"{_NAMES.get(type(summary), type(summary).__name__)}")
    return {k: v for k, v in summary.items()
            if k not in SUMMARY_KEYS or (not isinstance(v, bool)
                                         and isinstance(v, SUMMARY_KEYS[k][0]))}
