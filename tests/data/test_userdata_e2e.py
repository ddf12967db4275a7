"""End to end on the user's own data: an image folder imported, a study trained, evaluated,
failures found, explained and reported under the data's own name; superclasses only where the
data defines them."""

import json

import pytest
from test_userdata import make_cifar100_layout, make_image_folder

from cifarlens.cli import main
from cifarlens.data.userdata import register


@pytest.mark.slow
def test_imported_image_folder_through_a_study(tmp_path, capsys):
    src = make_image_folder(tmp_path / "pics", classes=("blue", "green", "grey", "red"),
                            n_train=20, n_test=8)
    assert main(["data", "import", str(src), "--data-dir", str(tmp_path / "d"),
                 "--name", "pics"]) == 0
    study = tmp_path / "s"
    assert main(["study", "--preset", "smoke", "--seeds", "1", "--epochs", "2", "--dataset",
                 "user", "--data-dir", str(tmp_path / "d"), "--out", str(study),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    cfg = json.loads((study / "runs" / "baseline-s0" / "config.json").read_text())
    assert cfg["dataset"] == "user" and cfg["data_source"] == "user"
    assert cfg["data_identity"]["name"] == "pics" and cfg["class_names"] == [
        "blue", "green", "grey", "red"]
    sm = json.loads((study / "summary.json").read_text())
    assert (sm["data_source"], sm["data_name"], sm["num_classes"]) == ("user", "pics", 4)
    # every stage ran: evaluation, failures, Grad-CAM
    run = study / "runs" / "baseline-s0"
    for f in ("metrics_test.json", "failures_test.json", "analysis.json"):
        assert (run / f).exists(), f
    assert "explain_test" in json.loads((run / "analysis.json").read_text())
    assert "superclass" not in json.loads((run / "metrics_test.json").read_text())
    md = (study / "report.md").read_text()
    html = (study / "report.html").read_text()
    assert "your data: pics: baseline vs variant" in html
    assert "Dataset: your data: pics with 4 classes; source: user" in md
    assert "your data defines no superclasses" in md
    assert "generated data, not" not in md and "Dataset: CIFAR-100" not in md


@pytest.mark.slow
def test_registered_data_with_superclasses_train_and_evaluate(tmp_path, capsys):
    folder = make_cifar100_layout(tmp_path / "c" / "cifar-100-python", k=4, n_train=30,
                                  n_test=10, coarse=[0, 0, 1, 1])
    assert main(["data", "register", str(tmp_path / "c"), "--name", "groups"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--epochs", "1", "--dataset", "user",
                 "--data-dir", str(folder), "--out", str(run), "--device", "cpu"]) == 0
    # evaluate finds the data again through the run's recorded data folder alone
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    m = json.loads((run / "metrics_test.json").read_text())
    assert m["superclass"]["coarse_names"] == ["group0", "group1"]
    assert (run / m["figures"]["confusion_superclass"]).exists()
    # another user dataset is refused by the run's data identity
    other = make_cifar100_layout(tmp_path / "o" / "cifar-100-python", k=4, n_train=30,
                                 n_test=10, coarse=[0, 0, 1, 1], seed=5)
    register(other, "groups")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--device", "cpu", "--data-dir", str(other)]) == 1
    assert "trained on other data" in capsys.readouterr().err
