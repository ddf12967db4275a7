"""Before a download starts: a folder that holds another dataset is a mistyped flag, not a
place to download into; and a download that fails leaves behind none of the folders it made."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cifarlens.errors import CifarlensError

# the folders and archives each dataset leaves in a data folder (cifarlens-user: `data import`)
_MARKS = {"cifar100": ("cifar-100-python", "cifar-100-python.tar.gz"),
          "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
          "user": ("cifarlens-user",)}


def refuse_other_dataset(root: Path, name: str) -> None:
    """One line, before any download into `root` for dataset `name`, when `root` is or holds
    another dataset's folder or archive (and nothing of `name`'s)."""
    for other, marks in _MARKS.items():
        if other == name:
            continue
        held = [m for m in marks if root.name == m or (root / m).exists()]
        if held:
            raise CifarlensError(f"{root} holds {held[0]}, not {name}: did you mean --dataset "
                                 f"{other}? (nothing was downloaded; to download {name} there "
                                 "anyway, give another --data-dir)")


@contextlib.contextmanager
def clean_on_failure(root: Path) -> Iterator[None]:
    """Remove, if the block fails, the folders of `root`'s path it created (only those, and only
    while empty: a failed download leaves the file system as it found it)."""
    made: list[Path] = []
    p = Path(os.path.abspath(root))
    while not p.exists():
        made.append(p)
        p = p.parent
    try:
        yield
    except BaseException:
        for d in made:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
