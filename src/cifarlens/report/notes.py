"""The user's own notes (STUDY/notes.md), placed under the sections they name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from cifarlens.errors import CifarlensError
from cifarlens.report.blocks import Block, heading
from cifarlens.report.constants import (
    STATUS_TEXT,
)
from cifarlens.report.formats import (
    _s,
    clean_text,
    num,
)
from cifarlens.study.folder import StudyFolder

if TYPE_CHECKING:  # the view reads the notes: only its type is needed here
    from cifarlens.report.view import View

NOTES_FILE = StudyFolder.NOTES
MAX_NOTES_BYTES = 1024 * 1024
_NOTE_HEADING = re.compile(r"^##[ \t]+(?:(study)|test[ \t]+(\d+))[ \t]*$", re.IGNORECASE)


def read_notes(study_dir: Path) -> dict[str, list[str]]:
    """STUDY/notes.md as {"study": [paragraphs], "test 1234": [paragraphs], ...}; {} without a
    file. Format: '## study' and '## test INDEX' headings (INDEX: the test image's dataset index,
    as in the failure tables), each followed by free text; paragraphs are separated by blank
    lines. Anything before the first '## ' heading is ignored (e.g. a '# title'). The text is
    the user's: the report shows it escaped, as plain paragraphs, never as HTML or Markdown.
    Raises CifarlensError, naming the line, for any other '## ' heading or a repeated one."""
    path = Path(study_dir) / NOTES_FILE
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > MAX_NOTES_BYTES:
            raise CifarlensError(f"{path}: larger than {MAX_NOTES_BYTES // 1024} KB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CifarlensError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CifarlensError(f"{path}: cannot be read ({e.strerror or e})") from None
    notes: dict[str, list[str]] = {}
    key: str | None = None
    lines: dict[str, list[str]] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("##") and not line.startswith("###"):
            m = _NOTE_HEADING.match(line.strip())
            if not m:
                raise CifarlensError(
                    f"{path} line {no}: heading {clean_text(line.strip())[:60]!r} is not "
                    "'## study' or '## test INDEX' (INDEX: a test image's dataset index)")
            key = "study" if m.group(1) else f"test {int(m.group(2))}"
            if key in lines:
                raise CifarlensError(f"{path} line {no}: a second '## {key}' heading")
            lines[key] = []
        elif key is not None:
            lines[key].append(line)
    for k, ls in lines.items():
        paras = [" ".join(x.strip() for x in block.splitlines() if x.strip())
                 for block in re.split(r"\n[ \t]*\n", "\n".join(ls))]
        notes[k] = [clean_text(p) for p in paras if p]
    return notes


def notes_blocks(v: View) -> list[Block]:
    """The notes on the tracked failures, each under its failure; then any other test image."""
    items = []
    tracked = {str(_s(f.index)): f for f in v.top}
    for key, paras in v.notes.items():
        if not key.startswith("test ") or not paras:
            continue
        idx = key.split()[1]
        f = tracked.get(idx)
        if f is not None:
            st = STATUS_TEXT.get(f.variant.status, "")
            title = (f"#{_s(f.rank)}, test image {idx}: true {_s(f.true_name)}, "
                     f"baseline said {_s(f.pred_name)}" + (f"; variant: {st}" if st else ""))
        else:
            title = f"Test image {idx} (not among the tracked failures)"
        items.append({"title": title, "paras": paras, "id": f"note-test-{idx}",
                      "rank": num(f.rank) if f else None})
    if not items:
        return []
    items.sort(key=lambda x: (x["rank"] is None, x["rank"] or 0))
    return [heading(f"Notes ({NOTES_FILE})"), {"type": "notes", "items": items}]
