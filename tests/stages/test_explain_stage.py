"""The `cifarlens explain` stage: ad-hoc analyses never replace the default explanation that a
study embeds (issue 12, "Artifacts a user can trust")."""

from __future__ import annotations

import numpy as np

from cifarlens._io import read_json
from cifarlens.stages import explain as stage
from cifarlens.stages.explain import (
    DEFAULT_OPTIONS,
    ExplainOptions,
    _progress_bar,
    adhoc_tag,
    explain,
)

QUIET = {"correct_sample": 12, "steps": 2, "log": lambda m: None}


def _explain(run, split="test", *, failures=12, log=lambda m: None, progress=True, **options):
    """explain() with its options spelled as keywords, as the tests below vary them."""
    return explain(run, split, failures=failures, options=ExplainOptions(**options), log=log,
                   progress=progress)


def _default_files(run, split="test"):
    files = [run / f"explanations_{split}.npz", run / f"figures/gradcam_{split}.png",
             run / f"figures/deletion_insertion_{split}.png"]
    assert all(f.exists() for f in files), [f for f in files if not f.exists()]
    return {f.name: f.read_bytes() for f in files}


def test_adhoc_tags_name_every_option_that_differs():
    assert adhoc_tag(options=DEFAULT_OPTIONS) == ""
    assert adhoc_tag(indices=[3, 17]) == "idx-3-17"
    many = adhoc_tag(indices=list(range(9)))
    assert many.startswith("idx9-") and many != adhoc_tag(indices=list(range(1, 10)))
    assert adhoc_tag(options={**DEFAULT_OPTIONS, "failures": 6}) == "top6"
    assert adhoc_tag(options={**DEFAULT_OPTIONS, "failures": 12}, reference={"failures": 6}) \
        == "top12"
    # the count does not choose the images of --indices or --all, so it is not in their tag
    assert adhoc_tag(indices=[1], options={**DEFAULT_OPTIONS, "failures": 2}) == "idx-1"
    assert adhoc_tag(all_images=True, layer="features.10", target="true",
                     options={**DEFAULT_OPTIONS, "steps": 4}) \
        == "all_steps4_layer-features.10_target-true"
    assert adhoc_tag(layer="a/../b c") == "layer-a-..-b-c"  # never a path


def test_adhoc_explain_leaves_the_default_files_byte_identical(analysed_copy, monkeypatch):
    run = analysed_copy
    bars, updates = [], []
    real_bar = _progress_bar

    def spy(total, desc, enabled):
        bar = real_bar(total, desc, enabled)
        real_update = bar.update
        bar.update = lambda k=1: (updates.append(k), real_update(k))
        bars.append((bar, enabled))
        return bar

    monkeypatch.setattr(stage, "_progress_bar", spy)
    first = _explain(run, "test", failures=3, **QUIET)  # the first plain explain: default
    assert first["tag"] is None and first["file"] == "explanations_test.npz"
    # one bar for the stage, advanced per batch (Grad-CAM and each faithfulness map), that
    # ends exactly at its total (so its ETA was computed against the right amount of work),
    # and is cleared from the log when done
    ((bar, enabled),) = bars
    assert enabled and bar.total > 0 and bar.n == bar.total and len(updates) >= 6
    assert bar.leave is False
    _explain(run, "test", failures=3, progress=False, **QUIET)
    assert bars[1][1] is False  # progress=False: a disabled bar
    before = _default_files(run)
    record = read_json(run / "analysis.json")["explain_test"]
    assert record["options"]["failures"] == 3

    logs: list[str] = []
    adhoc = [
        # tags name what differs from the CLI's defaults (QUIET's steps and sample too)
        (dict(indices=[0, 1, 2]), "idx-0-1-2_steps2_sample12"),
        (dict(failures=2), "top2_steps2_sample12"),  # another count than the default's 3
        (dict(failures=3, target="predicted"), "top3_steps2_sample12_target-predicted"),
    ]
    for kw, tag in adhoc:
        r = _explain(run, "test", **{**QUIET, **kw, "log": logs.append})
        assert r["tag"] == tag and r["file"] == f"explanations_test_{tag}.npz"
        assert (run / r["file"]).exists()
        assert read_json(run / "analysis.json")[f"explain_test_{tag}"]["file"] == r["file"]
        assert any(f"tagged '{tag}'" in m for m in logs)  # the user is told where it went
    np.testing.assert_array_equal(np.load(run / "explanations_test_idx-0-1-2_steps2_sample12.npz")["indices"],
                                  [0, 1, 2])
    np.testing.assert_array_equal(np.load(run / "explanations_test_top2_steps2_sample12.npz")["positions"],
                                  np.load(run / "explanations_test.npz")["positions"][:2])

    # the CLI's defaults exactly, beside this run's default (3 failures, 2 steps, 12 correct
    # images): nothing differs from the CLI's defaults, so the tag says how it differs from the
    # run's default
    r = _explain(run, "test", log=logs.append, progress=False)
    assert r["tag"] == "top12_steps16_sample200"

    assert _default_files(run) == before
    assert read_json(run / "analysis.json")["explain_test"] == record
    # the same options as the default rewrite it (a study's rerun), with the same bytes
    again = _explain(run, "test", failures=3, **QUIET)
    assert again["tag"] is None and _default_files(run) == before


def test_the_default_layer_by_name_is_not_ad_hoc(analysed_copy):
    """Naming the default layer gives the default explanation; another layer is tagged."""
    from cifarlens.cam.gradcam import find_cam_layer, layer_name
    from cifarlens.runs import load_model

    run = analysed_copy
    model, _ = load_model(run)
    default = layer_name(model, find_cam_layer(model))
    assert _explain(run, "test", failures=2, **QUIET)["tag"] is None
    r = _explain(run, "test", failures=2, layer=default, **QUIET)
    assert r["tag"] is None and r["layer"] == default
    r = _explain(run, "test", failures=2, layer="features.10", **QUIET)
    assert r["tag"] == "top2_steps2_sample12_layer-features.10" and r["layer"] == "features.10"


def test_explain_never_runs_another_stage(run_copy, analysed_copy):
    """The stage reads predictions and failures; making them is the CLI's or the study's job
    (issue 9): without them it says which command to run and writes nothing."""
    import pytest

    from cifarlens.errors import CifarlensError
    from cifarlens.runs import Run

    before = sorted(p.name for p in run_copy.rglob("*"))
    with pytest.raises(CifarlensError, match="run `cifarlens evaluate"):
        _explain(run_copy, "test", **QUIET)
    assert sorted(p.name for p in run_copy.rglob("*")) == before
    (analysed_copy / Run.failures_name("test")).unlink()
    with pytest.raises(CifarlensError, match="run `cifarlens failures"):
        _explain(analysed_copy, "test", **QUIET)
    assert not (analysed_copy / Run.explanations_name("test")).exists()
    # chosen images need no failures
    assert _explain(analysed_copy, "test", indices=[0, 1], **QUIET)["explained"] == 2


def test_a_model_without_failures_still_gets_its_correct_sample_explained(analysed_copy):
    """A baseline with no test errors (constructed: an empty failure list made from the current
    checkpoint) must not stop a study: the correct sample's faithfulness is still measured."""
    from cifarlens._io import write_json

    path = analysed_copy / "failures_test.json"
    fails = read_json(path)
    write_json(path, {**fails, "failures": [], "total_wrong": 0})
    logs: list[str] = []
    r = _explain(analysed_copy, "test", **{**QUIET, "log": logs.append})
    assert r["explained"] == 0 and "failures" not in r["faithfulness"]
    assert r["faithfulness"]["correct"]["n"] == QUIET["correct_sample"]
    assert "gradcam" not in r["figures"] and "deletion_insertion" in r["figures"]
    assert any("no failures" in m for m in logs)
    z = np.load(analysed_copy / r["file"])
    assert z["maps_pred"].shape[0] == 0 and z["positions"].shape == (0,)
