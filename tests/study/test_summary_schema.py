"""summary.json as types (study/schema.py): every nested key checked on the way in and out, a
schema_version, and a reader for the summaries the release before the typed schema wrote
(tests/fixtures/summary_v1.json: the demo study of commit 60c8e4e)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cifarlens.errors import CifarlensError
from cifarlens.report.render import render_report
from cifarlens.study.schema import (
    SCHEMA_VERSION,
    StudySummary,
    Variant,
    from_json,
    read_summary,
    summary_from_json,
    to_json,
    write_summary,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = FIXTURES / "summary_v1.json"


def _v1() -> dict:
    return json.loads(V1.read_text())


def test_a_version_1_summary_reads_without_its_duplicate_one_change_keys():
    old = _v1()
    s = summary_from_json(old)
    assert isinstance(s, StudySummary) and s.schema_version == SCHEMA_VERSION
    assert isinstance(s.main, Variant) and s.main.slug == "variant"
    # the v1 copies at the top level are the first variant's numbers, kept once
    assert s.main.comparison.seeds.p_value == old["comparison"]["seeds"]["p_value"]
    assert s.baseline.test.top1 == old["models"]["baseline"]["test"]["top1"]
    assert s.main.model.test.top1 == old["models"]["variant"]["test"]["top1"]
    assert [f.index for f in s.main.failures.top] == [f["index"] for f in old["failures"]["top"]]
    assert s.main.figures["gradcam_tracking"] == old["figures"]["gradcam_tracking"]
    data = to_json(s)
    for key in ("models", "change", "comparison"):
        assert key not in data
    assert "top" not in data["failures"] and "gradcam_tracking" not in data["figures"]


def test_writing_and_reading_round_trip_every_value(tmp_path):
    s = summary_from_json(_v1())
    data = write_summary(tmp_path / "summary.json", s)
    assert json.loads((tmp_path / "summary.json").read_text()) == data
    assert read_summary(tmp_path / "summary.json") == s


def test_a_summary_from_before_several_changes_gets_its_one_variant():
    old = _v1()
    del old["variants"]
    s = summary_from_json(old)
    assert [v.slug for v in s.variants] == ["variant"]
    assert s.main.change.variant == "crop-flip" and s.main.runs == ["runs/variant-s0"]


@pytest.mark.parametrize("path, value, want", [
    (("models", "baseline", "test", "top1"), "x",
     "variants|baseline.test.top1 must be a number, not a string"),
    (("models", "baseline", "params"), True, "baseline.params must be an integer, not true/false"),
    (("variants", 0, "comparison", "seeds", "mcnemar_per_seed", 1, "a_only"), 1.5,
     r"variants\[0\].comparison.seeds.mcnemar_per_seed\[1\].a_only must be an integer"),
    (("failures", "per_class_confident_errors", 0, "count"), None,
     r"failures.per_class_confident_errors\[0\].count must be an integer, not null"),
    (("explain", "border_share", "uniform"), [0.5], "border_share.uniform must be a number"),
    (("seeds",), {"0": 1}, "seeds must be a list, not an object"),
])
def test_a_wrong_nested_type_is_one_line_naming_its_path(path, value, want):
    data = _v1()
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(CifarlensError, match=want) as e:
        summary_from_json(data, "STUDY/summary.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("STUDY/summary.json")


def test_missing_and_unknown_nested_keys_are_named():
    data = _v1()
    del data["variants"][0]["model"]["best_epoch"]
    with pytest.raises(CifarlensError, match=r"variants\[0\].model has no 'best_epoch'"):
        summary_from_json(data)
    data = _v1()
    data["variants"][0]["comparison"]["per_class"]["improved"][0]["acc_a"] = 0.5
    with pytest.raises(CifarlensError, match=r"improved\[0\] has an unknown key 'acc_a'"):
        summary_from_json(data)


def test_a_newer_schema_and_a_non_object_are_refused_in_one_line():
    s = to_json(summary_from_json(_v1()))
    s["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CifarlensError, match="a newer cifarlens wrote it"):
        summary_from_json(s)
    with pytest.raises(CifarlensError, match="expected a JSON object, got a list"):
        summary_from_json([], "S")


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    s = summary_from_json(_v1())
    bad = copy.deepcopy(s)
    bad.baseline.test.top1 = "nan"  # a producer bug
    with pytest.raises(CifarlensError, match="baseline.test.top1 must be a number"):
        write_summary(tmp_path / "summary.json", bad)
    assert not (tmp_path / "summary.json").exists()


def test_from_json_checks_any_part_on_its_own():
    v = to_json(summary_from_json(_v1()).main)
    assert from_json(Variant, v, "v").slug == "variant"
    with pytest.raises(CifarlensError, match="v.model.val must be an object, not a list"):
        from_json(Variant, {**v, "model": {**v["model"], "val": []}}, "v")


def test_the_current_release_summary_renders_as_it_did_before_the_typed_schema(tmp_path):
    """The v1 fixture rendered by the release that wrote it (commit 60c8e4e, no figures in the
    folder) and by this one: the same Markdown and tables, but for the rebuild command's path."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "summary.json").write_text(V1.read_text())
    html, md = render_report(study)
    want = (FIXTURES / "summary_v1_report.md").read_text()
    assert md.read_text().replace(f"cifarlens report {study}", "cifarlens report study") == want
    for csv in (FIXTURES / "summary_v1_tables").iterdir():
        assert (study / "tables" / csv.name).read_text() == csv.read_text(), csv.name
