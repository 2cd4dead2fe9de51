from __future__ import annotations

import os

import pandas as pd

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
