from __future__ import annotations

import hashlib
import os
import tracemalloc

import numpy as np
import pandas as pd

import fakedata
from catsdogs_helpers import validating

EXPECTED = {
    "Cat/empty.jpg": (False, "empty"),
    "Cat/truncated.jpg": (False, "truncated"),
    "Cat/html.jpg": (False, "not_an_image"),
    "Cat/Thumbs.db": (False, "not_an_image"),
    "Cat/tiny.jpg": (False, "too_small"),
    "Cat/png_inside.jpg": (True, "ok"),
    "Dog/cmyk.jpg": (True, "ok"),
    "Dog/gray.jpg": (True, "ok"),
    "Dog/same_as_cat_0.jpg": (True, "ok"),
    "Cat/3.jpg": (True, "ok"),
}


def test_every_file_gets_its_verdict(petimages, tmp_path):
    manifest = validating.validate_folder(petimages, tmp_path / "manifest.csv", progress=False)
    assert list(manifest.columns) == validating.MANIFEST_COLUMNS
    verdicts = manifest.set_index("path")[["ok", "reason"]].apply(tuple, axis=1).to_dict()
    for path, expected in EXPECTED.items():
        assert verdicts[path] == expected, path
    notes = manifest.set_index("path")["note"]
    assert notes["Cat/png_inside.jpg"] == "PNG content"
    assert notes["Dog/cmyk.jpg"] == "converted from CMYK"
    assert notes["Dog/gray.jpg"] == "converted from L"
    assert len(manifest) == 2 * 40 + len([p for p in EXPECTED if "/" in p]) - 1
    assert manifest.loc[manifest["ok"], "sha256"].str.len().eq(64).all()


def test_manifest_round_trips_and_rerun_only_checks_changed_files(petimages, tmp_path, monkeypatch):
    path = tmp_path / "manifest.csv"
    first = validating.validate_folder(petimages, path, progress=False)
    pd.testing.assert_frame_equal(validating.read_manifest(path), first)

    checked = []
    original = validating.check_image
    monkeypatch.setattr(validating, "check_image",
                        lambda p, **kw: checked.append(p) or original(p, **kw))  # fmt: skip
    target = petimages / "Cat" / "5.jpg"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    os.utime(target, ns=(1, 1))
    again = validating.validate_folder(petimages, path, progress=False, workers=1)
    assert [os.path.basename(p) for p in checked] == ["5.jpg"]
    assert again.set_index("path").loc["Cat/5.jpg", "reason"] == "truncated"


def test_parallel_and_serial_checks_agree(petimages):
    serial = validating.validate_folder(petimages, workers=1, progress=False)
    parallel = validating.validate_folder(petimages, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_reason_counts_table(petimages):
    manifest = validating.validate_folder(petimages, progress=False)
    table = validating.reason_counts(manifest)
    assert table.loc["empty", "Cat"] == 1 and table.loc["not_an_image", "total"] == 2
    assert table.loc["total", "total"] == len(manifest)


def test_a_manifest_from_an_earlier_check_is_checked_again(petimages, tmp_path, monkeypatch):
    path = tmp_path / "manifest.csv"
    first = validating.validate_folder(petimages, path, progress=False)
    old = first.drop(columns=["checker"]).assign(dhash="0" * 64)  # the format before 2
    old.to_csv(path, index=False)
    assert (validating.read_manifest(path)["checker"] == 1).all()

    checked = []
    original = validating.check_image
    monkeypatch.setattr(validating, "check_image",
                        lambda p, **kw: checked.append(p) or original(p, **kw))  # fmt: skip
    again = validating.validate_folder(petimages, path, progress=False, workers=1)
    assert len(checked) == len(first)
    pd.testing.assert_frame_equal(again, first)
    checked.clear()
    validating.validate_folder(petimages, path, progress=False, workers=1)
    assert checked == []


def _two_classes(root):
    """``root/Cat`` (empty) and ``root/Dog`` with one photo: the least a layout accepts."""
    (root / "Cat").mkdir(parents=True)
    (root / "Dog").mkdir()
    photo = fakedata.photo(1, np.random.default_rng(0))
    (root / "Dog" / "1.jpg").write_bytes(fakedata.jpeg_bytes(photo))
    return root


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A sparse file one byte over the limit (no disk used): ``too_large`` with nothing read,
    so memory stays far under its size; the verdict is reused by the next validation."""
    root = _two_classes(tmp_path / "photos")
    huge = root / "Cat" / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(validating.MAX_FILE_BYTES + 1)
    tracemalloc.start()
    try:
        row = validating.check_image(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (row["ok"], row["reason"], row["sha256"]) == (False, "too_large", "")
    assert row["bytes"] == validating.MAX_FILE_BYTES + 1 and "limit" in row["note"]
    assert peak < 4_000_000, f"{peak} bytes allocated: the file was read"

    path = tmp_path / "manifest.csv"
    validating.validate_folder(root, path, progress=False, workers=1)
    checked = []
    original = validating.check_image
    monkeypatch.setattr(
        validating, "check_image", lambda p, **kw: checked.append(p) or original(p, **kw)
    )
    again = validating.validate_folder(root, path, progress=False, workers=1)
    assert checked == [] and again.set_index("path").loc["Cat/huge.jpg", "reason"] == "too_large"


def test_files_are_hashed_in_chunks_under_a_limit_a_test_can_shrink(tmp_path, monkeypatch):
    data = fakedata.jpeg_bytes(fakedata.photo(0, np.random.default_rng(2)))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(data)
    monkeypatch.setattr(validating, "READ_CHUNK", 1000)
    row = validating.check_image(photo)
    assert (row["ok"], row["bytes"]) == (True, len(data)) and len(data) > 3000
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(validating, "MAX_FILE_BYTES", len(data))
    assert validating.check_image(photo)["ok"], "a file of exactly the limit is read"
    monkeypatch.setattr(validating, "MAX_FILE_BYTES", len(data) - 1)
    row = validating.check_image(photo)
    assert (row["ok"], row["reason"], row["bytes"]) == (False, "too_large", len(data))
    assert row["note"] == f"{len(data):,} bytes, over the {len(data) - 1:,}-byte limit"
