"""A run's config.json with a list or number as data_dir is one line, not a traceback."""

from __future__ import annotations

import pytest

from cifarlens._io import write_json
from cifarlens.errors import CifarlensError
from cifarlens.runs import read_config


@pytest.mark.parametrize("where", ["top", "config"])
@pytest.mark.parametrize("value", [["a", "b"], 3, {"x": 1}])
def test_data_dir_that_is_not_a_path_is_refused(tmp_path, where, value):
    cfg = {"config": {"data_dir": None}, "model": "m", "dataset": "cifar10", "num_classes": 2,
           "class_names": ["a", "b"], "data_dir": "/d"}
    if where == "top":
        cfg["data_dir"] = value
    else:
        cfg["config"]["data_dir"] = value
    write_json(tmp_path / "config.json", cfg)
    with pytest.raises(CifarlensError, match="data_dir' is not a path"):
        read_config(tmp_path)
