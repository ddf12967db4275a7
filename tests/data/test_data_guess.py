"""A folder holding another dataset is a mistyped flag, never a download target; a failed
download leaves none of the folders it created (issue 20)."""

import pytest

from cifarlens.cli import main
from cifarlens.data import download
from cifarlens.data.load import locate
from cifarlens.errors import CifarlensError


@pytest.fixture
def no_network(monkeypatch):
    """fetch as it behaves offline: it makes the archive's folder, then fails."""
    calls = []

    def fetch(url, dest, md5, progress=True, **kw):
        calls.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        raise CifarlensError(f"cannot download {url}: network unreachable")

    monkeypatch.setattr(download, "fetch", fetch)
    return calls


def test_a_folder_of_another_dataset_is_named_not_downloaded_into(tmp_path, no_network):
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(CifarlensError, match="holds cifar-100-python, not cifar10: did you mean "
                                             "--dataset cifar100") as e:
        locate("cifar10", tmp_path)
    assert "\n" not in str(e.value)
    # pointed straight at the other dataset's folder
    with pytest.raises(CifarlensError, match="did you mean --dataset cifar100"):
        locate("cifar10", tmp_path / "cifar-100-python")
    (tmp_path / "u" / "cifarlens-user").mkdir(parents=True)
    with pytest.raises(CifarlensError, match="did you mean --dataset user"):
        locate("cifar100", tmp_path / "u")
    assert no_network == []  # nothing was downloaded
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cifar-100-python", "cifarlens-user",
                                                            "u"]


def test_a_failed_download_leaves_no_empty_folders(tmp_path, no_network, capsys):
    target = tmp_path / "typo" / "deeper"
    assert main(["data", "download", "--data-dir", str(target)]) == 1
    assert "network unreachable" in capsys.readouterr().err
    assert len(no_network) == 1 and not (tmp_path / "typo").exists()
    # a folder that was there before stays
    (tmp_path / "kept").mkdir()
    with pytest.raises(CifarlensError, match="network unreachable"):
        locate("cifar100", tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []
