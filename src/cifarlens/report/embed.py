"""Figures embedded as data URIs: loading (inside the study only), compaction, numbering data."""


from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from cifarlens.report.constants import (
    JPEG_QUALITY,
    MAX_FIGURE_BYTES,
    PHOTO_FIGURES,
    PHOTO_MAX_WIDTH,
    PNG_MAGIC,
)
from cifarlens.report.formats import MdRaw, clean_text

# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    key: str
    rel: str
    caption: str
    number: int = 0
    status: str = "ok"  # ok | missing | refused | invalid
    data_uri: str = ""
    md_path: MdRaw = field(default_factory=lambda: MdRaw(""))
    note: str = ""
    sha: str = ""  # of the PNG file, so an image listed twice is embedded once
    first: bool = False  # shown on the first screen (not lazy-loaded)


def is_photo_figure(key: str) -> bool:
    """A grid of images (JPEG when embedded), also a further change's copy ('<key>_<slug>')."""
    return key in PHOTO_FIGURES or any(key.startswith(k + "_") for k in PHOTO_FIGURES)


# compact_image results by (sha256 of the PNG, photo): one report build reads each figure
# three times (headline, tables, page), and re-encoding was a third of the demo's report time.
_COMPACTED: dict[tuple[bytes, bool], tuple[str, bytes]] = {}
_COMPACTED_MAX = 64


def compact_image(data: bytes, photo: bool) -> tuple[str, bytes]:
    """(mime type, bytes) of a PNG re-encoded for embedding: a photo-like grid as JPEG
    (quality JPEG_QUALITY, at most PHOTO_MAX_WIDTH px wide), a plot as a 256-colour palette
    PNG when that is smaller (flat colours and colormaps survive it), else the PNG as given."""
    key = (hashlib.sha256(data).digest(), photo)
    if key not in _COMPACTED:
        if len(_COMPACTED) >= _COMPACTED_MAX:
            _COMPACTED.clear()
        _COMPACTED[key] = _compact_image(data, photo)
    return _COMPACTED[key]


def _compact_image(data: bytes, photo: bool) -> tuple[str, bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgba = im.convert("RGBA")
    rgb = Image.new("RGB", rgba.size, "white")  # our figures are drawn on white
    rgb.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    if photo:
        if rgb.width > PHOTO_MAX_WIDTH:
            h = max(1, round(rgb.height * PHOTO_MAX_WIDTH / rgb.width))
            rgb = rgb.resize((PHOTO_MAX_WIDTH, h), Image.Resampling.LANCZOS)
        rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return "image/jpeg", out.getvalue()
    pal = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(out, "PNG", optimize=True)
    return ("image/png", out.getvalue()) if out.tell() < len(data) else ("image/png", data)


def load_figure(study_dir: Path, key: str, rel: Any, caption: str) -> Figure:
    """A figure embedded as a data: URI, or a note saying why it is not shown.

    Refuses absolute paths and anything that resolves (symlinks included) outside study_dir,
    so a hostile summary cannot pull /etc/passwd or another study's files into the report.
    """
    fig = Figure(key=key, rel=clean_text(rel) if rel is not None else "", caption=caption)
    if not isinstance(rel, str) or not rel.strip():
        fig.status, fig.note = "refused", f"figure not embedded: no valid path for '{key}'"
        return fig
    try:
        root = study_dir.resolve()
        rp = Path(rel)
        target = (root / rp).resolve()
        inside = not rp.is_absolute() and target.is_relative_to(root)
    except (OSError, ValueError, RuntimeError):
        inside = False
    if not inside:
        fig.status = "refused"
        fig.note = f"figure not embedded: '{fig.rel}' is outside the study folder"
        return fig
    try:
        if not target.is_file():
            fig.status, fig.note = "missing", f"figure missing: '{fig.rel}' was not found"
            return fig
        if target.stat().st_size > MAX_FIGURE_BYTES:
            fig.status, fig.note = "invalid", f"figure not embedded: '{fig.rel}' is too large"
            return fig
        data = target.read_bytes()
    except OSError as e:
        fig.status, fig.note = "missing", f"figure missing: '{fig.rel}' ({e.strerror or e})"
        return fig
    if not data.startswith(PNG_MAGIC):
        fig.status, fig.note = "invalid", f"figure not embedded: '{fig.rel}' is not a PNG file"
        return fig
    try:
        mime, small = compact_image(data, photo=is_photo_figure(key))
    except (OSError, ValueError, Image.DecompressionBombError):
        fig.status, fig.note = "invalid", f"figure not embedded: '{fig.rel}' is not a readable PNG"
        return fig
    fig.sha = hashlib.sha256(data).hexdigest()
    fig.data_uri = f"data:{mime};base64," + base64.b64encode(small).decode("ascii")
    # Markdown links to the file itself, percent-encoded so spaces or ')' cannot break the link.
    fig.md_path = MdRaw(quote(target.relative_to(root).as_posix()))
    return fig


