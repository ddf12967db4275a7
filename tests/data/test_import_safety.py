"""`data import` and `data register` on hostile or unusual input: bit depths, huge images,
symlinks out of the source folder, class names that are blank, not UTF-8 or look alike."""

import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from test_userdata import make_cifar100_layout, make_image_folder

from cifarlens.cli import main
from cifarlens.data.image_import import MAX_PIXELS, load_image
from cifarlens.data.load import load_dataset
from cifarlens.data.userdata import import_images, register
from cifarlens.errors import CifarlensError


def _chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def png16(path, arr, color_type):
    """A 16-bit PNG of this colour type (0 grey, 4 grey+alpha, 2 RGB, 6 RGBA) from uint16 arr."""
    h, w = arr.shape[:2]
    rows = arr.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\0" + rows[i * stride:(i + 1) * stride] for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("color_type,channels", [(0, 0), (4, 2), (2, 3), (6, 4)])
def test_16_bit_pngs_are_scaled_by_bit_depth_not_clipped(tmp_path, color_type, channels):
    ramp = np.linspace(0, 61380, 32 * 32).reshape(32, 32).astype(np.uint16)
    arr = ramp if channels == 0 else np.stack([ramp] * channels, axis=-1)
    if channels in (2, 4):
        arr[..., -1] = 65535  # opaque
    png16(tmp_path / "a.png", arr, color_type)
    got = load_image(tmp_path / "a.png", 32)
    want = (ramp >> 8).astype(np.uint8)
    assert np.abs(got[..., 0].astype(int) - want).max() <= 1
    assert (got == 255).mean() < 0.01  # the old code made 99.5% of it white


@pytest.mark.parametrize("mode,arr", [("I", np.full((8, 8), 70000, np.int32)),
                                      ("F", np.zeros((8, 8), np.float32))])
def test_images_of_unknown_range_are_refused_in_one_line(tmp_path, mode, arr):
    # 32-bit integers or floats have no format maximum to scale by; a TIFF named .png is
    # read by content, as any such file would be
    Image.fromarray(arr, mode=mode).save(tmp_path / "x.tiff")
    os.replace(tmp_path / "x.tiff", tmp_path / "x.png")
    with pytest.raises(CifarlensError, match=rf"x\.png has pixel mode {mode} ") as e:
        load_image(tmp_path / "x.png", 32)
    assert "\n" not in str(e.value)


def test_a_huge_image_is_refused_on_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    side = int(MAX_PIXELS ** 0.5) + 1
    # the header claims side x side; the pixel data is never read, so a tiny file suffices
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    before = Image.MAX_IMAGE_PIXELS
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(1))
    with pytest.raises(CifarlensError, match=r"big\.png is .* pixels: at most") as e:
        load_image(path, 32)
    assert "\n" not in str(e.value) and not loaded
    assert Image.MAX_IMAGE_PIXELS == before  # the user's Pillow setting is left alone


def test_symlinks_out_of_the_source_folder_are_refused(tmp_path):
    outside = make_image_folder(tmp_path / "elsewhere")
    src = make_image_folder(tmp_path / "src")
    (src / "train" / "red" / "stolen.png").symlink_to(outside / "train" / "red" / "img1.png")
    with pytest.raises(CifarlensError, match="stolen.png leads out of") as e:
        import_images(src, tmp_path / "d", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "d" / "cifarlens-user").exists()
    (src / "train" / "red" / "stolen.png").unlink()
    os.symlink(outside / "train" / "red", src / "train" / "pink")
    os.symlink(outside / "test" / "red", src / "test" / "pink")
    with pytest.raises(CifarlensError, match="pink leads out of"):
        import_images(src, tmp_path / "d", progress=False)
    # a symlink that stays inside the folder is fine
    (src / "train" / "pink").unlink()
    (src / "test" / "pink").unlink()
    (src / "train" / "red" / "again.png").symlink_to(src / "train" / "red" / "img1.png")
    assert import_images(src, tmp_path / "d", progress=False).is_dir()


@pytest.mark.parametrize("a,b", [("Cafe\u0301", "Caf\u00e9"), ("Red", "red"),
                                 ("ｒｅｄ", "red"), ("red ", "red")])
def test_look_alike_class_folders_are_refused_naming_both(tmp_path, a, b):
    src = make_image_folder(tmp_path / "src", classes=("blue", "red"))
    for split in ("train", "test"):
        os.rename(src / split / "red", src / split / a)
        make_image_folder(tmp_path / f"x{split}", classes=("red",))
        os.rename(tmp_path / f"x{split}" / split / "red", src / split / b)
    with pytest.raises(CifarlensError, match="same name once normalised") as e:
        import_images(src, tmp_path / "d", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.count(str(src / "train")) == 2


def test_blank_and_non_utf8_class_folders_are_one_line(tmp_path, capsys):
    src = make_image_folder(tmp_path / "src", classes=("blue", "red"))
    for split in ("train", "test"):
        os.rename(src / split / "red", src / split / "   ")
    with pytest.raises(CifarlensError, match="must not be blank"):
        import_images(src, tmp_path / "d", progress=False)
    for split in ("train", "test"):
        os.rename(src / split / "   ", os.fsencode(src / split) + b"/r\xe9d")
    assert main(["data", "import", str(src), "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid UTF-8" in err and "r\\xe9d" in err
    assert not (tmp_path / "d" / "cifarlens-user").exists()


def _rewrite_names(folder, names):
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}, protocol=2))


def test_register_checks_the_class_names_of_the_meta_file(tmp_path):
    folder = make_cifar100_layout(tmp_path / "r" / "cifar-100-python", k=3)
    _rewrite_names(folder, [b"cat", b"", b"dog"])  # an empty name pickles as bytes()
    with pytest.raises(CifarlensError) as e:
        register(folder)
    assert "must not be blank" in str(e.value) and "forbidden" not in str(e.value)
    assert "class 1" in str(e.value)
    _rewrite_names(folder, [b"cat", "Caf\u00e9".encode(), "CAFE\u0301".encode()])
    with pytest.raises(CifarlensError, match="'Café'.*class 1.*class 2.*same name"):
        register(folder)
    _rewrite_names(folder, [b"cat", b"bird", b"dog"])
    assert register(folder)[2] == "registered"
    assert load_dataset("user", folder, download=False).class_names == ["cat", "bird", "dog"]
