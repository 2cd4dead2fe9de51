"""The difference hash, the near-duplicate search and the duplicate groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

import fakedata
from catsdogs_helpers import duplicates, validating


def _distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _random_hashes(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def _flip(hex_hash: str, bits: list[int]) -> str:
    """The hash with the given bit positions inverted."""
    value = int(hex_hash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


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


def test_near_duplicate_pairs_are_every_close_pair_once_across_blocks():
    hashes = _random_hashes(600)
    hashes[400] = _flip(hashes[3], list(range(12)))  # in another block of 256, at the threshold
    hashes[5] = _flip(hashes[4], [0, 100, 200])
    hashes[599] = _flip(hashes[598], list(range(13)))  # one bit too far
    hashes[7] = ""  # a rejected file
    hashes[8] = ""
    pairs = duplicates.near_duplicate_pairs(hashes)
    expected = [
        (i, j, _distance(hashes[i], hashes[j]))
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if hashes[i] and hashes[j] and _distance(hashes[i], hashes[j]) <= 12
    ]
    assert sorted(pairs.itertuples(index=False, name=None)) == expected
    assert (3, 400, 12) in expected and (4, 5, 3) in expected
    assert duplicates.near_duplicate_pairs(["", ""]).empty


def test_duplicate_groups_join_same_bytes_and_chains_of_close_hashes():
    hashes = _random_hashes(6, seed=1)
    hashes[1] = _flip(hashes[0], list(range(10)))
    hashes[2] = _flip(hashes[1], list(range(10, 20)))  # 20 bits from the first: joined via 1
    manifest = pd.DataFrame(
        {"sha256": ["a", "b", "c", "d", "d", ""], "dhash": hashes}, index=list("uvwxyz")
    )
    groups = duplicates.duplicate_groups(manifest)
    assert groups.index.tolist() == list("uvwxyz")
    assert groups.tolist() == [0, 0, 0, 1, 1, 2]
    assert duplicates.duplicate_groups(manifest, max_distance=0).tolist() == [0, 1, 2, 3, 3, 4]
