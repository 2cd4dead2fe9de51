"""The difference hash and the search for duplicates."""

from __future__ import annotations

import numpy as np
from PIL import Image

import fakedata
from catsdogs_helpers import duplicates, validating


def _distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_dhash_is_the_same_for_a_pillow_image_and_its_gray_pixels():
    photo = fakedata.scene(5)
    assert duplicates.dhash(photo) == duplicates.dhash(np.asarray(photo.convert("L")))
    assert len(duplicates.dhash(photo)) == 64  # 256 bits in hex


def test_copies_of_a_full_size_photo_hash_close_and_other_photos_far(tmp_path):
    hashes = {}
    for name, seed, size, quality in [
        ("photo", 11, (500, 375), 90),
        ("resized", 11, (375, 281), 90),
        ("requality", 11, (500, 375), 40),
        ("other", 12, (500, 375), 90),
    ]:
        path = tmp_path / f"{name}.jpg"
        fakedata.scene(seed).resize((500, 375)).resize(size).save(path, "JPEG", quality=quality)
        hashes[name] = validating.check_image(path)["dhash"]
    png = tmp_path / "photo.png"
    Image.open(tmp_path / "photo.jpg").save(png)
    hashes["png"] = validating.check_image(png)["dhash"]
    for copy in ("resized", "requality", "png"):
        assert _distance(hashes["photo"], hashes[copy]) <= 12, copy
    assert _distance(hashes["photo"], hashes["other"]) > 24


def test_duplicates_find_the_photo_under_both_classes(petimages):
    manifest = validating.validate_folder(petimages, progress=False)
    dups = duplicates.find_duplicates(manifest)
    assert set(dups["path"]) == {"Cat/0.jpg", "Dog/same_as_cat_0.jpg"}
    assert dups["n_labels"].eq(2).all()
