"""The checks `data import` makes on a folder of images, and the reading of one image.

Kept apart from data/userdata.py: what a file or a class folder may be (inside the source folder,
a UTF-8 name, one class per name once normalised) and how an image's pixels become uint8
(by its bit depth, never by clipping), each refusal one line naming the file or folder.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np

from cifarlens.errors import CifarlensError

# 4096 x 4096: 48 MiB once RGB, far past what a CIFAR-style CNN takes; checked on the header,
# before a pixel is decoded (a 9000 x 9000 PNG costs 1.3 GB decoded).
MAX_PIXELS = 4096 * 4096
# Modes whose pixels are 16-bit grey: scaled to 8 bits by the format's maximum (>> 8, as
# Pillow itself reads 16-bit RGB and RGBA PNGs), never clipped at 255.
_GREY16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Modes that are 8 bits a channel (or fewer): Pillow's convert("RGB") is faithful for these.
_EIGHT_BIT = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                        "YCbCr", "LAB", "HSV"})


def shown(path: Path | str) -> str:
    """A path as one printable line, whatever bytes its name holds (a non-UTF-8 name is read
    back by Python with surrogate escapes, which cannot be printed or encoded)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def check_inside(src: Path, path: Path) -> None:
    """Refuse a file or folder whose real location leaves SRC (a symlink pointing out of it):
    an import reads only what is in the folder it was given."""
    real = path.resolve()
    if real != src and src not in real.parents:
        raise CifarlensError(f"{shown(path)} leads out of {shown(src)} (to {shown(real)}): "
                             "a symlink out of the source folder is not imported; copy the "
                             "files in instead")


def normal_name(name: str) -> str:
    """The class name as stored: NFC, so the same letters typed two ways are one name."""
    return unicodedata.normalize("NFC", name)


def _look_alike_key(name: str) -> str:
    # NFKC folds width and compatibility forms (full-width letters, ligatures), casefold the
    # case: two names equal under it would read as one class in every table.
    return unicodedata.normalize("NFKC", name).casefold().strip()


def check_class_names(names: list[str], where: list[str]) -> list[str]:
    """The names NFC-normalised, or one line refusing a non-UTF-8, blank or non-printable name
    or two names that are one after normalisation (`where[i]`: the folder or file of name i)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(names):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise CifarlensError(f"class name of {shown(where[i])} is not valid UTF-8: rename "
                                 "the folder") from None
        name = normal_name(raw)
        if not name.strip():
            raise CifarlensError(f"{shown(where[i])}: a class name must not be blank")
        if not name.isprintable():
            raise CifarlensError(f"{shown(where[i])}: class name {name!r} holds control "
                                 "characters")
        key = _look_alike_key(name)
        if key in seen:
            j = seen[key]
            raise CifarlensError(f"class names {out[j]!r} ({shown(where[j])}) and {name!r} "
                                 f"({shown(where[i])}) are the same name once normalised "
                                 "(Unicode NFKC, case): rename one")
        seen[key] = i
        out.append(name)
    return out


def load_image(path: Path, side: int) -> np.ndarray:
    """One image as uint8 (side, side, 3): its size checked on the header before decoding, its
    pixels scaled by bit depth, EXIF-rotated, centre-cropped to a square and resized with
    bicubic filtering (left as it is when it already is side x side)."""
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # a file claiming huge dimensions is a bad image here, not a warning (Pillow's own
            # bound, left as the user set it; ours below is tighter)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise CifarlensError(f"image {shown(path)} is {w} x {h} pixels: at most "
                                         f"{MAX_PIXELS:,} pixels (4096 x 4096) are imported; "
                                         "shrink it first")
                mode = im.mode
                if mode not in _GREY16 and mode not in _EIGHT_BIT:
                    raise CifarlensError(f"image {shown(path)} has pixel mode {mode} (e.g. "
                                         "32-bit integers or floats) whose range is not known: "
                                         "save it as 8- or 16-bit PNG or JPEG")
                im.load()
                im = ImageOps.exif_transpose(im)
                if mode in _GREY16:
                    im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
                im = im.convert("RGB")
                if im.size != (side, side):
                    im = ImageOps.fit(im, (side, side), Image.Resampling.BICUBIC)
                return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise CifarlensError(f"cannot read image {shown(path)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'unreadable'}") from None
