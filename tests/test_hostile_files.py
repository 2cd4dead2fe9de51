"""Every kind of file the real world hands the validate step, with its documented verdict."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
import threading
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fakedata
from catsdogs_helpers import datasets, images, splitting, validating

RNG = np.random.default_rng(1)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def _bomb_png() -> bytes:
    """A valid PNG whose header claims 100,000 x 100,000 pixels."""
    data = bytearray(_save(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", 100_000, 100_000)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return _save(fakedata.photo(0, RNG, (200, 120)), "JPEG", exif=exif.tobytes())


def _corrupt_middle(good: bytes) -> bytes:
    data = bytearray(good)
    for k in range(len(data) // 2, len(data) // 2 + 40):
        data[k] = 0xFF if k % 7 == 0 else data[k] ^ 0x5A
    return bytes(data)


def _extraneous_bytes() -> bytes:
    """A bit flipped in the scan: libjpeg warns (extraneous bytes) but decodes the photo."""
    data = bytearray(fakedata.jpeg_bytes(fakedata.photo(0, np.random.default_rng(1), (220, 160))))
    data[len(data) // 3 + 2 * 97] ^= 0x40
    return bytes(data)


PHOTO = fakedata.photo(0, RNG, (220, 160))
GOOD = fakedata.jpeg_bytes(PHOTO)
PROGRESSIVE = _save(PHOTO, "JPEG", quality=90, progressive=True)
MPO = _save(PHOTO, "MPO", save_all=True, append_images=[PHOTO.rotate(90)])  # camera style

# file name -> (bytes, expected ok, expected reason, expected text in the note)
CORPUS = {
    "empty.jpg": (b"", False, "empty", ""),
    "truncated.jpg": (GOOD[: len(GOOD) // 2], False, "truncated", "truncated"),
    "random_bytes.jpg": (bytes(RNG.integers(0, 256, 3000, dtype=np.uint8)), False,
                         "not_an_image", ""),
    "error_page.jpg": (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", False,
                       "not_an_image", ""),
    "png_inside.jpg": (_save(PHOTO, "PNG"), True, "ok", "PNG content"),
    "bmp_inside.jpg": (_save(PHOTO, "BMP"), True, "ok", "BMP content"),
    "gif_inside.jpg": (_save(PHOTO.convert("P"), "GIF"), True, "ok", "GIF content"),
    "cmyk.jpg": (fakedata.jpeg_bytes(PHOTO.convert("CMYK")), True, "ok", "converted from CMYK"),
    "grayscale.jpg": (fakedata.jpeg_bytes(PHOTO.convert("L")), True, "ok", "converted from L"),
    "rgba.png": (_save(PHOTO.convert("RGBA"), "PNG"), True, "ok", "converted from RGBA"),
    "sixteen_bit.png": (_save(Image.fromarray(
        np.asarray(PHOTO.convert("L"), dtype=np.uint16) * 257), "PNG"), True, "ok",
        "converted from I;16"),
    "one_pixel.jpg": (fakedata.jpeg_bytes(Image.new("RGB", (1, 1))), False, "too_small", ""),
    "exif_rotated.jpg": (_exif_rotated(), True, "ok", "EXIF orientation 6 applied"),
    "trailing_garbage.jpg": (GOOD + b"garbage" * 20, True, "ok", "bytes after the end marker"),
    "extraneous_bytes.jpg": (_extraneous_bytes(), True, "ok",
                             "1 decoder warning(s): Corrupt JPEG data"),
    "ended_early.jpg": (GOOD[: len(GOOD) // 2] + b"\xff\xd9", False, "truncated",
                        "premature end of data segment"),
    "corrupt_middle.jpg": (_corrupt_middle(GOOD), False, "corrupt",
                           "premature end of data segment"),
    "progressive.jpg": (PROGRESSIVE, True, "ok", ""),
    "mpo.jpg": (MPO, True, "ok", "MPO content"),
    "mpo_truncated.jpg": (MPO[: len(MPO) // 4], False, "truncated", "truncated"),
    "progressive_truncated.jpg": (PROGRESSIVE[: len(PROGRESSIVE) * 2 // 3], False, "truncated",
                                  "truncated"),
    "bomb.png": (_bomb_png(), False, "too_large", "decompression bomb"),
    "Thumbs.db": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), False, "not_an_image", ""),
    "Kätzchen im Garten ü.jpg": (GOOD, True, "ok", ""),
}  # fmt: skip


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "PetImages"
    (root / "Cat").mkdir(parents=True)
    (root / "Dog").mkdir()
    for name, (data, *_) in CORPUS.items():
        (root / "Cat" / name).write_bytes(data)
    (root / "Cat" / "folder.jpg").mkdir()  # a directory with an image's name
    for i in range(12):
        (root / "Dog" / f"{i}.jpg").write_bytes(fakedata.jpeg_bytes(fakedata.photo(1, RNG)))
    return root


def test_every_hostile_file_gets_its_documented_verdict(corpus, capfd):
    manifest = validating.validate_folder(corpus, workers=1, progress=False).set_index("path")
    for name, (_, ok, reason, note) in CORPUS.items():
        row = manifest.loc[f"Cat/{name}"]
        assert (row["ok"], row["reason"]) == (ok, reason), name
        assert note in row["note"], (name, row["note"])
    assert manifest.loc["Cat/folder.jpg", "reason"] == "not_a_file"
    assert manifest.loc["Cat/extraneous_bytes.jpg", "decoder_warnings"] == 1
    assert (
        manifest.loc["Cat/Kätzchen im Garten ü.jpg", "sha256"]
        == manifest.loc["Cat/Kätzchen im Garten ü.jpg", "sha256"]
    )
    out, err = capfd.readouterr()
    assert "Corrupt JPEG" not in out + err, "decoder warnings are counted, not printed"


def test_the_report_survives_a_round_trip_with_odd_names(corpus, tmp_path):
    path = tmp_path / "manifest.csv"
    made = validating.validate_folder(corpus, path, workers=1, progress=False)
    pd.testing.assert_frame_equal(validating.read_manifest(path), made)
    counts = validating.reason_counts(made)
    assert counts.loc["not_an_image", "Cat"] == 3


def test_exif_rotation_is_applied_when_decoding():
    image = images.open_image(_exif_rotated())
    assert image.size == (120, 200)  # stored 200x120, displayed upright


def test_near_duplicates_are_grouped_and_kept_on_one_side(tmp_path):
    root = fakedata.make_petimages(tmp_path, per_class=30, broken=False)
    photo = fakedata.scene(7)
    (root / "Cat" / "0.jpg").write_bytes(fakedata.jpeg_bytes(photo))
    (root / "Cat" / "reencoded.jpg").write_bytes(fakedata.jpeg_bytes(photo, quality=40))
    (root / "Cat" / "resized.jpg").write_bytes(
        fakedata.jpeg_bytes(photo.resize((photo.width * 3 // 4, photo.height * 3 // 4)))
    )
    manifest = validating.validate_folder(root, progress=False)
    split = splitting.split_dataset(manifest).set_index("path")
    group = split.loc[["Cat/0.jpg", "Cat/reencoded.jpg", "Cat/resized.jpg"]]
    assert group["group"].nunique() == 1
    assert (group["split"] == "excluded").sum() == 2 and (group["reason"] == "duplicate").sum() == 2
    assert splitting.leakage_report(split.reset_index(), manifest).empty


def test_file_broken_after_validation_is_skipped_with_a_logged_reason(tmp_path, caplog):
    root = fakedata.make_petimages(tmp_path, per_class=15, broken=False)
    manifest = validating.validate_folder(root, progress=False)
    split = splitting.split_dataset(manifest, seed=0)
    victim = split.query("split == 'train'").iloc[0]["path"]
    data = (root / victim).read_bytes()
    (root / victim).write_bytes(data[: len(data) // 3])  # changed on disk since validation
    used = split[split["split"].isin(splitting.SPLITS)]
    with caplog.at_level(logging.WARNING, logger="catsdogs_helpers"):
        cache = datasets.build_cache(root, used, tmp_path / "cache", 32, progress=False)
        train = datasets.split_datasets(cache, split, ["Cat", "Dog"], {"train": None})["train"]
    assert f"skipping {victim}" in caplog.text
    assert len(train) == (split["split"] == "train").sum() - 1
    loader = datasets.make_loader(train, batch_size=8, shuffle=True)
    assert sum(len(batch[1]) for batch in loader) == len(train)

    files = datasets.ImageFileDataset([root / victim, root / "Dog" / "1.jpg"], [0, 1], size=32)
    with caplog.at_level(logging.WARNING, logger="catsdogs_helpers"):
        images_, labels, _ = next(iter(datasets.make_loader(files, batch_size=2, shuffle=False)))
    assert labels.tolist() == [1] and images_.shape == (1, 32, 32, 3)
    assert os.path.basename(victim) in caplog.text


def test_predicting_files_gives_the_validate_steps_verdict(corpus):
    import torch

    from catsdogs_helpers import calibration, predicting
    from catsdogs_helpers.transforms import Preprocessing

    class Brightness(torch.nn.Module):
        def forward(self, x):
            s = x.mean(dim=(1, 2, 3))
            return torch.stack([-s, s], 1)

    manifest = validating.validate_folder(corpus, workers=1, progress=False).set_index("path")
    classifier = predicting.Classifier(
        Brightness(),
        ("Cat", "Dog"),
        Preprocessing(36, 32),
        calibration.Decision(),
        torch.device("cpu"),
    )
    table = predicting.predict_files(classifier, corpus / "Cat").set_index("path")
    assert set(table.index) >= {"one_pixel.jpg", "corrupt_middle.jpg", "bomb.png"}
    for name, row in table.iterrows():
        verdict = manifest.loc[f"Cat/{name}"]
        if verdict["ok"]:
            assert row["predicted"] in ("Cat", "Dog") and row["error"] == "", name
        else:
            assert row["predicted"] == "" and row["error"] == verdict["reason"], name
            assert pd.isna(row["confidence"]) and pd.isna(row["p_Cat"]), name
        assert row["note"] == verdict["note"], name
    assert table.loc["one_pixel.jpg", "error"] == "too_small"
    assert table.loc["corrupt_middle.jpg", "error"] == "corrupt"


# ------------------------------------------------------------------- links and special files
# The rule (docs/own-data.md): a link is followed, wherever it leads, but the kernel's own
# files (under /proc, /sys and /dev) are never read, nor is anything but a regular file
# opened: each gets the verdict not_a_file, with a note saying which it is.

# name in Cat/ -> (what it is, expected ok, reason, text in the note)
LINKED = {
    "outside.jpg": ("link to a photo outside the folder", True, "ok", ""),
    "passwd.jpg": ("link to /etc/passwd", False, "not_an_image", ""),
    "environ.jpg": ("link to /proc/self/environ", False, "not_a_file", "a system file (/proc/"),
    "cpus.jpg": (
        "link to /sys/devices/system/cpu/online",
        False,
        "not_a_file",
        "a system file (/sys/devices/system/cpu/online)",
    ),
    "null.jpg": ("link to /dev/null", False, "not_a_file", "a system file (/dev/null)"),
    "fifo.jpg": ("a FIFO", False, "not_a_file", "a FIFO (named pipe)"),
    "sub.jpg": ("a folder", False, "not_a_file", "a folder"),
}


def _links(tmp_path):
    root = tmp_path / "PetImages"
    (root / "Cat").mkdir(parents=True)
    (root / "Dog").mkdir()
    (root / "Dog" / "0.jpg").write_bytes(GOOD)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "photo.jpg").write_bytes(GOOD)
    targets = {
        "outside.jpg": tmp_path / "elsewhere" / "photo.jpg",
        "passwd.jpg": "/etc/passwd",
        "environ.jpg": "/proc/self/environ",
        "cpus.jpg": "/sys/devices/system/cpu/online",
        "null.jpg": "/dev/null",
    }
    for name, target in targets.items():
        os.symlink(target, root / "Cat" / name)
    os.mkfifo(root / "Cat" / "fifo.jpg")
    (root / "Cat" / "sub.jpg").mkdir()
    return root


def test_links_are_followed_but_never_into_the_kernels_files(tmp_path, caplog):
    root = _links(tmp_path)
    with caplog.at_level(logging.WARNING, logger="catsdogs_helpers"):
        manifest = validating.validate_folder(root, workers=1, progress=False).set_index("path")
    for name, (what, ok, reason, note) in LINKED.items():
        if not os.path.exists(root / "Cat" / name):  # no /sys/... here
            continue
        row = manifest.loc[f"Cat/{name}"]
        assert (row["ok"], row["reason"]) == (ok, reason), what
        assert note in row["note"], (what, row["note"])
        if reason == "not_a_file":
            assert row["sha256"] == "", f"{what}: read"
    sha256 = manifest.loc["Cat/outside.jpg", "sha256"]
    assert sha256 == hashlib.sha256(GOOD).hexdigest() == manifest.loc["Dog/0.jpg", "sha256"]
    assert "of the files lead out of" in caplog.text and "'Cat/environ.jpg'" in caplog.text


def _returns(func, fifo: str):
    """``func()``'s value or error; fails when it is still waiting after 10 s (it opened the
    FIFO, which blocks until a writer comes: one is let in, so that the test can end)."""
    out: dict = {}

    def call():
        try:
            out["value"] = func()
        except Exception as err:  # the caller looks at it
            out["error"] = err

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"{func} opened the FIFO {fifo} and waited for a writer")
    return out


def test_a_fifo_or_a_system_file_is_never_opened_even_for_a_look(tmp_path):
    """The sizes notebook 01 peeks at and the photos it shows open no FIFO (which would wait
    for ever) and read no system file."""
    root = _links(tmp_path)
    fifo = str(root / "Cat" / "fifo.jpg")
    files = validating.list_files(root)
    sizes = _returns(lambda: validating.peek_sizes(root, files), fifo)["value"].set_index("path")
    assert tuple(sizes.loc["Cat/outside.jpg", ["format", "width"]]) == ("JPEG", 220)
    assert (sizes.drop(["Cat/outside.jpg", "Dog/0.jpg"])["format"] == "").all()
    for name in ("fifo.jpg", "environ.jpg", "null.jpg"):
        error = _returns(lambda n=name: images.open_image(root / "Cat" / n), fifo)["error"]
        assert isinstance(error, OSError) and "never" in str(error), (name, error)
    assert images.open_image(root / "Cat" / "outside.jpg").size == (220, 160)
