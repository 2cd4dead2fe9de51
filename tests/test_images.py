"""Reduced-scale decoding and the capture of libjpeg's warnings."""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

import fakedata
from catsdogs_helpers import images, validating


def _jpeg(size=(500, 375), **kwargs) -> bytes:
    out = io.BytesIO()
    fakedata.scene(3).resize(size).save(out, "JPEG", quality=90, **kwargs)
    return out.getvalue()


def test_captured_stderr_collects_what_c_code_writes_and_then_lets_it_through(capfd):
    with images.captured_stderr() as lines:
        os.write(2, b"Corrupt JPEG data: 3 extraneous bytes\n\nsecond line\n")
    assert lines == ["Corrupt JPEG data: 3 extraneous bytes", "second line"]
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err == "after the block\n"


@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_jpeg_gray_decodes_at_the_asked_scale(reduction):
    gray, messages = images.jpeg_gray(_jpeg(), reduction)
    assert gray.dtype == np.uint8 and gray.ndim == 2
    assert gray.shape == (-(-375 // reduction), -(-500 // reduction))
    assert messages == []


def test_jpeg_gray_applies_exif_orientation_and_reports_damage():
    exif = Image.Exif()
    exif[0x0112] = 6
    gray, _ = images.jpeg_gray(_jpeg(exif=exif.tobytes()), 8)
    assert gray.shape == (63, 47)  # stored 500x375, upright 375x500
    data = _jpeg()
    assert images.jpeg_gray(data[: len(data) // 2], 8)[0] is None
    closed_early = data[: len(data) // 2] + b"\xff\xd9"
    gray, messages = images.jpeg_gray(closed_early, 8)
    assert gray is not None and "premature end of data segment" in messages[0]


def test_reduction_keeps_the_shorter_side_large_enough():
    assert images.reduction_for((500, 375), 32) == 8
    assert images.reduction_for((180, 180), 32) == 4
    assert images.reduction_for((100, 64), 32) == 2
    assert images.reduction_for((40, 40), 32) == 1


def test_a_jpeg_is_decoded_once_during_validation(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg())
    calls = {"imdecode": 0, "pillow": 0}
    imdecode, load = images.cv2.imdecode, Image.Image.load

    def counting_imdecode(*args):
        calls["imdecode"] += 1
        return imdecode(*args)

    def counting_load(self):
        calls["pillow"] += 1
        return load(self)

    monkeypatch.setattr(images.cv2, "imdecode", counting_imdecode)
    monkeypatch.setattr(Image.Image, "load", counting_load)
    row = validating.check_image(path)
    assert row["ok"] and row["dhash"]
    assert calls == {"imdecode": 1, "pillow": 0}


def test_a_jpeg_opencv_declines_silently_goes_to_pillow(tmp_path, monkeypatch):
    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    good.write_bytes(_jpeg())
    data = bytearray(_jpeg())
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(range(56, 256))  # damaged mid-scan
    broken.write_bytes(bytes(data))
    monkeypatch.setattr(validating, "jpeg_gray", lambda data, reduction: (None, []))
    row = validating.check_image(good)
    assert (row["ok"], row["reason"], row["format"]) == (True, "ok", "JPEG") and row["dhash"]
    row = validating.check_image(broken)
    assert (row["ok"], row["reason"]) == (False, "corrupt"), row["note"]
    assert "broken data stream" in row["note"]


def test_captured_stderr_does_not_wait_for_a_child_that_inherited_it():
    import subprocess
    import time

    start = time.perf_counter()
    with images.captured_stderr():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    assert time.perf_counter() - start < 1.5
    child.wait()
