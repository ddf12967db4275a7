"""The neighbours stage: features cached through Run, neighbours in failures_<split>.json."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlens.analysis import neighbours as NB
from cifarlens.runs import Run
from cifarlens.stages import neighbours as ST


def test_every_failure_gets_its_neighbours_from_the_right_classes_and_the_cache_is_reused(
        analysed_copy):
    run = Run(analysed_copy)
    summary = ST.add_neighbours(run, "test", log=lambda m: None)
    res = run.failures("test")
    split = run.split_indices()
    data = run.data()
    train_idx = set(split["train_used"].tolist())
    for f in res["failures"]:
        for side in ("pred", "true"):
            nb = f["neighbours"][side]
            assert len(nb) == ST.K
            assert {e["label"] for e in nb} == {f[side]}
            assert all(e["index"] in train_idx and data.train_y[e["index"]] == e["label"]
                       for e in nb)  # dataset indices, as in split.npz
            sims = [e["similarity"] for e in nb]
            assert sims == sorted(sims, reverse=True) and -1 <= sims[-1] <= sims[0] <= 1
    assert res["neighbours"]["layer"] == "classifier.4" and res["neighbours"]["k"] == ST.K
    assert summary == res["neighbours"]["summary"] and summary["n_failures"] == len(res["failures"])
    assert run.analysis()["neighbours_test"]["numbers"] == summary
    # the same neighbours straight from the arrays
    ftr, itr, _ = ST.split_features(run, "train")
    fte, _, _ = ST.split_features(run, "test")
    f0 = res["failures"][0]
    direct = NB.nearest(fte[[f0["position"]]], ftr, data.train_y[itr],
                        np.array([[f0["pred"], f0["true"]]]))
    assert [e["index"] for e in f0["neighbours"]["pred"]] == itr[direct["class_index"][0, 0]].tolist()
    # cached: a second stage run reads the files instead of computing them
    cache = run.file(Run.features_name("train"))
    mtime = cache.stat().st_mtime_ns
    ST.add_neighbours(run, "test", log=lambda m: None)
    assert cache.stat().st_mtime_ns == mtime
    assert run.current("features", "train")["features"].dtype == np.float16


def test_features_from_another_checkpoint_are_not_used(analysed_copy):
    run = Run(analysed_copy)
    f, idx, _ = ST.split_features(run, "test")
    run.write_features("test", "", {"indices": idx, "features": f, "layer": np.array("x"),
                                    "checkpoint_sha256": np.array("0" * 64)})
    assert run.current("features", "test") is None
    ST.split_features(run, "test")
    assert run.current("features", "test") is not None
    assert Run.features_name("test", "features.14") == "features_test_features.14.npz"
    assert Run.features_name("train", "a/b c") == "features_train_a-b-c.npz"


def test_cli_failures_takes_a_feature_layer_or_skips_the_neighbours(analysed_copy, capsys):
    from cifarlens.cli import main

    assert main(["failures", str(analysed_copy), "--no-progress", "--no-neighbours"]) == 0
    run = Run(analysed_copy)
    assert "neighbours" not in run.failures("test")
    assert main(["failures", str(analysed_copy), "--no-progress",
                 "--feature-layer", "features.14"]) == 0
    res = run.failures("test")
    assert res["neighbours"]["layer"] == "features.14"
    assert run.has(Run.features_name("train", "features.14"))
    assert len(res["failures"][0]["neighbours"]["true"]) == ST.K
    assert main(["failures", str(analysed_copy), "--no-progress", "--feature-layer", "nope"]) == 1
    assert "no module 'nope'" in capsys.readouterr().err


def test_the_change_view_pairs_the_same_images_under_both_models(analysed_copy, tmp_path):
    import shutil

    from cifarlens._io import save_npz

    variant = tmp_path / "variant"
    shutil.copytree(analysed_copy, variant)
    p = Run(variant).predictions("test")
    wrong = np.flatnonzero(p["pred"] != p["labels"])
    fixed = wrong[::3]  # the "variant" gets these right; its features are the baseline's
    pred = p["pred"].copy()
    pred[fixed] = p["labels"][fixed]
    save_npz(Run(variant).file(Run.predictions_name("test")), **{**p, "pred": pred})
    out = ST.change(analysed_copy, variant)
    assert out["fixed"]["n"] == len(fixed) and out["fixed"]["mean_diff"] == pytest.approx(0.0)
    assert not out["fixed"]["fell"] and not out["fixed"]["rose"]
    assert out["still_wrong"]["n"] == len(wrong) - len(fixed)
    assert out["fixed"]["p"] == pytest.approx(1.0)


def test_the_browser_gets_every_errors_neighbours_and_the_tracked_ones_thumbnails(
        analysed_copy, tmp_path):
    import io
    import json
    import shutil

    from PIL import Image

    from cifarlens._io import save_npz
    from cifarlens.study import browse as B
    from cifarlens.study import browse_neighbours as BN

    study = tmp_path / "study"
    B.prepare(study, analysed_copy, analysed_copy)
    assert json.loads((study / "browse" / "errors.json").read_text())["neighbours"] is None
    run = Run(analysed_copy)
    ST.add_neighbours(run, "test", log=lambda m: None)
    # a "variant" (the same model) that gets 5 of the baseline's right images wrong
    variant = tmp_path / "variant"
    shutil.copytree(analysed_copy, variant)
    p = Run(variant).predictions("test")
    new = np.flatnonzero(p["pred"] == p["labels"])[:5]
    pred_b = p["pred"].copy()
    pred_b[new] = (p["labels"][new] + 1) % 100
    save_npz(Run(variant).file(Run.predictions_name("test")), **{**p, "pred": pred_b})
    B.prepare(study, analysed_copy, variant)
    rec = json.loads((study / "browse" / "errors.json").read_text())
    rows, nb = rec["rows"], rec["neighbours"]
    labels, sims = BN.decode(nb)
    fails = {f["index"]: f for f in run.failures("test")["failures"]}
    for r, row in enumerate(rows):
        if row["outcome"] == "newly_wrong":  # the variant's neighbours, of its prediction
            assert nb["of"][r] == "b" and (labels[r, 0] == row["pred_b"]).all()
            assert (labels[r, 1] == row["true"]).all() and (np.diff(sims[r, 0]) <= 0.01).all()
            continue
        f = fails[row["index"]]  # the baseline's, as in failures_test.json
        assert nb["of"][r] == "a"
        for side, key in enumerate(("pred", "true")):
            assert labels[r, side].tolist() == [e["label"] for e in f["neighbours"][key]]
            want = [e["similarity"] for e in f["neighbours"][key]]
            assert np.abs(sims[r, side] - want).max() <= 1 / 255 + 1e-9  # uint8 steps
    assert sum(row["outcome"] == "newly_wrong" for row in rows) == 5
    # the first ROWS failures have tiles, one per distinct training image, after the rows'
    row_of = {row["index"]: row["k"] for row in rows}
    first = [f for f in fails.values() if f["rank"] <= BN.ROWS]
    assert sorted(nb["tiles"]) == sorted(str(row_of[f["index"]]) for f in first)
    tiles = {}
    for f in first:
        got = nb["tiles"][str(row_of[f["index"]])]
        want = f["neighbours"]["pred"] + f["neighbours"]["true"]
        for t, e in zip(got, want, strict=True):
            assert tiles.setdefault(e["index"], t) == t
    assert sorted(set(tiles.values())) == list(range(len(rows), len(rows) + len(tiles)))
    im = np.asarray(Image.open(io.BytesIO((study / "browse" / "atlas.jpg").read_bytes())))
    train = run.data().train_x
    for index, tile in list(tiles.items())[:5]:  # the tile shows that training image (JPEG q90)
        r, c = divmod(tile, B.ATLAS_COLS)
        cell = im[32 * r:32 * r + 32, 32 * c:32 * c + 32].astype(int)
        assert np.abs(cell - train[index].transpose(1, 2, 0)).mean() < 8
    one = BN.row_neighbours(nb, row_of[first[0]["index"]])
    assert [x[1] for x in one["pred"]] == [e["label"] for e in first[0]["neighbours"]["pred"]]
    assert all(x[0] is not None for x in one["pred"] + one["true"])
    ctx = B.table_context(study, "browse/errors.json")
    assert ctx["data"]["neighbours"]["labels"] == nb["labels"]
    nb["labels"] = nb["labels"][:-8]  # tampered: dropped, the table kept
    (study / "browse" / "errors.json").write_text(json.dumps(rec))
    assert B.load(study, "browse/errors.json")["neighbours"] is None
