from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catsdogs_helpers import runs, splitting, validating


def _manifest(n_per_class=100, classes=("Cat", "Dog")):
    rng = np.random.default_rng(0)
    rows = []
    for label in classes:
        for i in range(n_per_class):
            dhash = rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()
            rows.append({"path": f"{label}/{i}.jpg", "label": label, "ok": True,
                         "sha256": f"{label}{i}", "dhash": dhash})  # fmt: skip
    return pd.DataFrame(rows)


def _flip(hex_hash: str, n_bits: int) -> str:
    """The hash with its first ``n_bits`` bits inverted."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_hash), dtype=np.uint8))
    bits[:n_bits] ^= 1
    return np.packbits(bits).tobytes().hex()


def test_split_is_stratified_seeded_and_sized():
    manifest = _manifest(200)
    split = splitting.split_dataset(manifest, seed=1)
    counts = pd.crosstab(split["split"], split["label"])
    assert counts.loc["test"].tolist() == [20, 20]
    assert counts.loc["val"].tolist() == [20, 20]
    assert counts.loc["train"].tolist() == [160, 160]
    pd.testing.assert_frame_equal(split, splitting.split_dataset(manifest, seed=1))
    assert not split.equals(splitting.split_dataset(manifest, seed=2))


def test_duplicates_stay_on_one_side_and_conflicts_are_left_out():
    manifest = _manifest(50)
    manifest.loc[1, "sha256"] = manifest.loc[0, "sha256"]  # exact copy, same class
    manifest.loc[2, "dhash"] = _flip(manifest.loc[0, "dhash"], 5)  # a resized copy
    manifest.loc[60, "sha256"] = manifest.loc[3, "sha256"]  # Cat/3 filed as Dog/10 too
    split = splitting.split_dataset(manifest).set_index("path")
    assert split.loc[["Cat/1.jpg", "Cat/2.jpg"], "reason"].tolist() == ["duplicate"] * 2
    assert split.loc["Cat/0.jpg", "split"] in splitting.SPLITS
    assert split.loc[["Cat/3.jpg", "Dog/10.jpg"], "reason"].tolist() == ["label_conflict"] * 2
    used = split[split["split"].isin(splitting.SPLITS)]
    assert used.groupby("group")["split"].nunique().eq(1).all()
    assert not used["group"].duplicated().any()


def test_limit_per_class_keeps_a_seeded_subset():
    split = splitting.split_dataset(_manifest(300), limit_per_class=50)
    used = split[split["split"].isin(splitting.SPLITS)]
    assert used["label"].value_counts().tolist() == [50, 50]
    assert (split["reason"] == "over_limit").sum() == 500


def test_empty_or_missing_class_is_a_clear_error():
    manifest = _manifest(50)
    manifest.loc[manifest["label"] == "Dog", "ok"] = False
    with pytest.raises(ValueError, match=r"empty: \['Dog'\]"):
        splitting.split_dataset(manifest)
    with pytest.raises(ValueError, match="at least two classes"):
        splitting.split_dataset(_manifest(50, classes=("Cat",)))
    with pytest.raises(ValueError, match="too few usable images"):
        splitting.split_dataset(_manifest(5))


def test_three_classes_work():
    split = splitting.split_dataset(_manifest(40, classes=("Bird", "Cat", "Dog")))
    assert splitting.class_names(split) == ["Bird", "Cat", "Dog"]
    assert split.groupby("split")["label"].nunique().eq(3).all()


def test_save_split_never_silently_replaces_a_different_split(tmp_path):
    path = tmp_path / "split.csv"
    first = splitting.split_dataset(_manifest(60), seed=1)
    splitting.save_split(first, path)
    splitting.save_split(first, path)  # same split: fine
    other = splitting.split_dataset(_manifest(60), seed=2)
    with pytest.raises(runs.RunConflict, match="new RUN_NAME"):
        splitting.save_split(other, path)
    pd.testing.assert_frame_equal(splitting.read_split(path)[["path", "split"]],
                                  first[["path", "split"]])  # fmt: skip
    splitting.save_split(other, path, overwrite=True)
    assert splitting.read_split(path)["split"].tolist() == other["split"].tolist()


def test_split_of_real_files_excludes_rejects_and_cross_class_copy(petimages):
    manifest = validating.validate_folder(petimages, progress=False)
    split = splitting.split_dataset(manifest).set_index("path")
    assert "Cat/empty.jpg" not in split.index
    assert split.loc["Dog/same_as_cat_0.jpg", "reason"] == "label_conflict"


def test_leakage_report_finds_similar_photos_across_splits():
    manifest = _manifest(50)
    split = splitting.split_dataset(manifest, seed=0)
    a = split.query("split == 'train'").iloc[0]["path"]
    b = split.query("split == 'test'").iloc[0]["path"]
    near = _flip(manifest.set_index("path").loc[a, "dhash"], 20)
    manifest.loc[manifest["path"] == b, "dhash"] = near
    report = splitting.leakage_report(split, manifest)
    assert len(report) == 1
    assert {report.iloc[0]["path_a"], report.iloc[0]["path_b"]} == {a, b}
    assert report.iloc[0]["distance"] == 20
