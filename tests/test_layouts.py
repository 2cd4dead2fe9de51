"""Labels read three ways (class folders, file names, a CSV) through the same validation and
split, any number of classes, and the errors for photos a classifier cannot learn from."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import pytest

import fakedata
from catsdogs_helpers import (
    config,
    downloading,
    evaluation,
    layouts,
    splitting,
    validating,
    workflow,
)
from catsdogs_helpers.config import Layout, ParameterError
from catsdogs_helpers.tools import series

REPO = Path(__file__).resolve().parent.parent


def _split(data, **cell):
    """The run's split as notebook 02 makes it, from a parameters cell."""
    cfg = config.make_config(DATA_DIR=str(data), **cell)
    return cfg, workflow.ensure_split(cfg, progress=False)


def _labels(split):
    used = split[split["split"] != "excluded"]
    return used.groupby("label")["split"].value_counts().unstack(fill_value=0)


# ------------------------------------------------------------------- three classes, end to end


def test_three_classes_in_class_folders_through_all_five_notebooks(tmp_path, monkeypatch):
    """Bird, Cat and Dog folders in a zip served on 127.0.0.1 (not named PetImages): every
    notebook runs, the model has three outputs, and it learns (above a third)."""
    pets = fakedata.make_petimages(tmp_path / "src", 40, ("Bird", "Cat", "Dog"), broken=False)
    shapes = pets.rename(pets.parent / "Shapes")
    archive = fakedata.zip_folder(shapes, tmp_path / "shapes.zip")
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "data"))
    with fakedata.serve({"/shapes.zip": archive.read_bytes()}) as (base, _):
        series.run_series(
            {"DATASET_URL": f"{base}/shapes.zip", "RUN_NAME": "three", "EPOCHS": 3,
             "IMAGE_SIZE": 48, "BATCH_SIZE": 16, "NUM_WORKERS": 0},
        )  # fmt: skip
    run = config.run_dir("three")
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["test_confusion_matrix"]) == 3 and metrics["n_test"] == 12
    low, _ = evaluation.accuracy_interval(metrics["test_accuracy"], metrics["n_test"])
    print(f"3-class test accuracy {metrics['test_accuracy']:.3f} on {metrics['n_test']}")
    assert low > 1 / 3, f"test accuracy {metrics['test_accuracy']:.3f} is not above chance"
    assert 0 <= metrics["test_roc_auc"] <= 1, "one-vs-rest ROC AUC"
    assert (run / "figures" / "confusion_matrix.png").is_file()
    assert not (run / "figures" / "roc.png").exists(), "the ROC cell is for two classes"
    predictions = (run / "predictions-my_photos.csv").read_text().splitlines()[0]
    assert {"p_Bird", "p_Cat", "p_Dog"} <= set(predictions.split(","))


# --------------------------------------------------------------------------- file names


def test_file_names_label_a_flat_folder(tmp_path, caplog):
    """Kaggle's naming (cat.0.jpg, dog.0.jpg), extracted as one folder: the manifest has
    the labels and the verdicts, the split is stratified by them."""
    folder = fakedata.make_named(tmp_path / "data" / "train", per_class=20)
    (folder / "cat.999.jpg").write_bytes(b"")  # broken: validation gives its verdict
    (folder / "notes.txt").write_text("not a photo")  # not a photo by its suffix
    (folder / "0001.jpg").write_bytes((folder / "cat.0.jpg").read_bytes())
    with caplog.at_level(logging.WARNING, logger="catsdogs_helpers"):
        cfg, split = _split(tmp_path / "data", LABELS="filenames")
    assert "left out 1 photos whose names LABEL_PATTERN" in caplog.text
    assert "'0001.jpg'" in caplog.text
    manifest = validating.read_manifest(workflow.manifest_path(cfg)).set_index("path")
    assert sorted(manifest["label"].unique()) == ["cat", "dog"] and len(manifest) == 41
    assert manifest.loc["cat.999.jpg", "reason"] == "empty"
    assert _labels(split).to_dict("index") == {
        "cat": {"test": 2, "train": 16, "val": 2}, "dog": {"test": 2, "train": 16, "val": 2}
    }  # fmt: skip


def test_named_photos_in_a_zip_through_notebooks_01_and_02(tmp_path, monkeypatch):
    """Kaggle's train.zip, as it is: one folder of cat.<n>.jpg and dog.<n>.jpg."""
    folder = fakedata.make_named(tmp_path / "src" / "train", per_class=20)
    archive = fakedata.zip_folder(folder, tmp_path / "train.zip")
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "data"))
    with fakedata.serve({"/train.zip": archive.read_bytes()}) as (base, _):
        series.run_series(
            {"DATASET_URL": f"{base}/train.zip", "RUN_NAME": "named", "LABELS": "filenames"},
            only=["01", "02"],
        )
    split = splitting.read_split(config.run_dir("named") / "split.csv")
    assert _labels(split).to_dict("index") == {
        "cat": {"test": 2, "train": 16, "val": 2}, "dog": {"test": 2, "train": 16, "val": 2}
    }  # fmt: skip


def test_no_named_photos_and_the_default_archive_is_an_error_not_a_download(tmp_path):
    cfg = config.make_config(DATA_DIR=str(tmp_path), LABELS="filenames")
    with pytest.raises(downloading.DownloadError, match="found no photos in .* as LABELS="):
        workflow.ensure_images(cfg, progress=False)
    assert not list(tmp_path.glob("*.zip*")), "nothing was downloaded"


def test_a_flat_folder_of_named_photos_stops_naming_labels_filenames_and_downloads_nothing(
    tmp_path,
):
    """The user's own cat.1.jpg photos as DATA_DIR, LABELS left at "folders": with a network
    the default DATASET_URL would put Microsoft's archive into their folder."""
    folder = fakedata.make_named(tmp_path / "mine", per_class=5)
    with fakedata.serve({"/archive.zip": b"never fetched"}) as (base, handler):
        cfg = config.make_config(DATA_DIR=str(folder), DATASET_URL=f"{base}/archive.zip")
        with pytest.raises(layouts.LayoutError) as caught:
            workflow.ensure_images(cfg, progress=False)
        assert not handler.requests, "nothing was asked of the server"
    message = str(caught.value)
    assert "found 10 photos named like cat.0.jpg (2 classes by their names: cat, dog)" in message
    assert 'set LABELS="filenames"' in message and "Nothing is downloaded" in message
    assert sorted(p.suffix for p in folder.iterdir()) == [".jpg"] * 10, "the folder is as it was"
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    (unnamed / "IMG_0001.jpg").write_bytes(b"")
    with pytest.raises(layouts.LayoutError, match="found 1 photos .like IMG_0001.jpg. and no one"):
        workflow.ensure_images(config.make_config(DATA_DIR=str(unnamed)), progress=False)
    named = config.make_config(DATA_DIR=str(folder), LABELS="filenames")
    assert workflow.ensure_images(named, progress=False) == folder, "read by their names"


def test_a_pattern_of_your_own_names_the_label_anywhere(tmp_path):
    names = {f"IMG_{i:04d}_{name}.png": label
             for label, name in enumerate(("bird", "cat", "dog")) for i in range(20)}  # fmt: skip
    fakedata.write_photos(tmp_path / "data", names)
    _, split = _split(tmp_path / "data", LABELS="filenames", LABEL_PATTERN=r"_([a-z]+)\.png$")
    assert sorted(split["label"].unique()) == ["bird", "cat", "dog"]
    assert (split["split"] == "test").sum() == 6  # stratified: 2 of each


def test_a_pattern_that_matches_nothing_says_so(tmp_path):
    fakedata.make_named(tmp_path / "data" / "train", per_class=4)
    cfg = config.make_config(DATA_DIR=str(tmp_path / "data"), LABELS="filenames",
                             LABEL_PATTERN=r"^(\d+)_")  # fmt: skip
    message = "LABEL_PATTERN='^(\\\\d+)_' matches none of the 8 photos in"
    with pytest.raises(layouts.LayoutError, match=re.escape(message)):
        workflow.ensure_manifest(cfg, progress=False)


# ----------------------------------------------------------------------------------- CSV


def test_a_csv_labels_photos_anywhere_under_its_folder(tmp_path, caplog):
    """labels.csv beside the photos, paths relative to it; a row naming a file that is not
    there is kept, and validation calls it unreadable; rows without a label are left out."""
    folder = fakedata.make_csv_labelled(tmp_path / "data" / "photos", per_class=20)
    with open(folder / "labels.csv", "a") as f:
        f.write("img/gone.jpg,cat,\nimg/0/0000.jpg,cat,again\nimg/1/0001.jpg,,\n")
    with caplog.at_level(logging.WARNING, logger="catsdogs_helpers"):
        cfg, split = _split(tmp_path / "data", LABELS="csv")
    assert "names 1 files that are not there" in caplog.text
    assert "left out 1 rows without a path or a label" in caplog.text
    manifest = validating.read_manifest(workflow.manifest_path(cfg)).set_index("path")
    assert len(manifest) == 41 and manifest.loc["img/gone.jpg", "reason"] == "unreadable"
    assert manifest.loc["img/1/0001.jpg", "label"] == "cat", "the first, labelled row"
    assert sorted(split.loc[split["split"] == "test", "label"]) == ["cat"] * 2 + ["dog"] * 2


def test_labels_csv_can_be_anywhere_and_named_as_you_like(tmp_path):
    folder = fakedata.make_csv_labelled(tmp_path / "elsewhere", per_class=12)
    text = (folder / "labels.csv").read_text().replace("path,label", "Path,Label")
    (folder / "labels.csv").unlink()
    (folder / "mine.csv").write_bytes(text.encode("utf-8-sig"))  # as Excel saves it
    cfg, split = _split(tmp_path / "data", LABELS="csv", LABELS_CSV=str(folder / "mine.csv"))
    assert workflow.ensure_images(cfg, progress=False) == folder, "nothing is downloaded"
    assert len(split) == 24 and set(split["label"]) == {"cat", "dog"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,class\na.jpg,cat\n", "lacks the column(s) path, label (it has: file, class)"),
        ("path,label\nx/a.jpg,cat\nx/b.jpg,dog\n", "none of the 2 paths in"),
        ("path,label\n../a.jpg,cat\n", "names '../a.jpg': write each path relative to"),
        ("path,label\na.jpg,cat\na.jpg,dog\n", "gives some files more than one label (a.jpg"),
    ],
)
def test_a_csv_that_cannot_label_the_photos_says_why(tmp_path, content, message):
    (tmp_path / "data").mkdir()
    fakedata.write_photos(tmp_path / "data", {"a.jpg": 0})
    (tmp_path / "data" / "labels.csv").write_text(content)
    cfg = config.make_config(DATA_DIR=str(tmp_path / "data"), LABELS="csv")
    with pytest.raises(layouts.LayoutError, match=re.escape(message)):
        workflow.ensure_manifest(cfg, progress=False)


def test_links_a_csv_names_are_followed_but_never_into_the_kernels_files(tmp_path):
    """The rule of docs/own-data.md, through a CSV: rows naming links in its folder that lead
    out of it. A photo there is validated and trained on; /etc/passwd is read (and is no
    photo); /proc/self/environ is never read."""
    folder = fakedata.make_csv_labelled(tmp_path / "data" / "photos", per_class=12)
    outside = fakedata.write_photos(tmp_path / "elsewhere", {"cat.jpg": 0}, seed=1) / "cat.jpg"
    targets = {"cat.jpg": outside, "passwd.jpg": "/etc/passwd", "env.jpg": "/proc/self/environ"}
    (folder / "links").mkdir()
    for name, target in targets.items():
        os.symlink(target, folder / "links" / name)
    with open(folder / "labels.csv", "a") as f:
        f.write("".join(f"links/{name},cat,linked\n" for name in targets))
    cfg, split = _split(tmp_path / "data", LABELS="csv")
    manifest = validating.read_manifest(workflow.manifest_path(cfg)).set_index("path")
    linked = manifest.loc["links/cat.jpg"]
    assert linked["ok"] and linked["sha256"] == hashlib.sha256(outside.read_bytes()).hexdigest()
    assert split.set_index("path").loc["links/cat.jpg", "split"] in splitting.SPLITS
    assert manifest.loc["links/passwd.jpg", "reason"] == "not_an_image"
    environ = manifest.loc["links/env.jpg"]
    assert (environ["reason"], environ["sha256"]) == ("not_a_file", "")
    assert environ["note"].startswith("a system file (/proc/")
    rule = (REPO / "docs" / "own-data.md").read_text()
    assert "`/proc`, `/sys` and `/dev`" in rule and "`not_a_file`" in rule


def test_a_csv_can_name_files_whose_names_are_not_utf8(tmp_path):
    """Linux names are bytes: a CSV written from them (not UTF-8 there) labels them."""
    folder = fakedata.make_csv_labelled(tmp_path / "photos", per_class=12)
    name = os.fsencode(folder / "img" / "0") + b"/chat\xe9.jpg"
    os.rename(folder / "img" / "0" / "0000.jpg", name)
    text = (folder / "labels.csv").read_bytes()
    (folder / "labels.csv").write_bytes(text.replace(b"img/0/0000.jpg", b"img/0/chat\xe9.jpg"))
    table = layouts.read_labels(folder, Layout("csv"))
    assert os.fsdecode(b"img/0/chat\xe9.jpg") in set(table["path"]) and len(table) == 24
    manifest = validating.validate_folder(
        folder, tmp_path / "m.csv", progress=False, layout=Layout("csv")
    )
    assert manifest["ok"].all()


def test_a_missing_labels_csv_says_where_it_looked(tmp_path):
    root = fakedata.write_photos(tmp_path / "photos", {"a.jpg": 0})
    layout = Layout("csv", csv_path=tmp_path / "nope.csv")
    with pytest.raises(layouts.LayoutError, match=re.escape(f"{tmp_path / 'nope.csv'} is not")):
        layouts.read_labels(root, layout)


# ------------------------------------------------------------------- one class, or none


def test_one_class_is_a_clear_error(tmp_path):
    pets = fakedata.make_petimages(tmp_path, per_class=12, classes=("Cat",), broken=False)
    with pytest.raises(layouts.LayoutError) as caught:
        validating.validate_folder(pets, progress=False)
    assert str(caught.value).startswith(f"found one class, 'Cat' (12 files) in {pets}, read as")
    assert "A classifier needs at least two classes" in str(caught.value)


def test_no_class_is_a_clear_error(tmp_path):
    (tmp_path / "PetImages" / "Cat").mkdir(parents=True)
    (tmp_path / "PetImages" / "Dog").mkdir()
    cfg = config.make_config(DATA_DIR=str(tmp_path))
    with pytest.raises(layouts.LayoutError, match="found no photos in .*one folder of photos"):
        workflow.ensure_split(cfg, progress=False)


def test_one_name_in_a_flat_folder_is_one_class(tmp_path):
    fakedata.make_named(tmp_path / "train", per_class=5, classes=("cat",))
    with pytest.raises(layouts.LayoutError, match=r"found one class, 'cat' \(5 files\)"):
        validating.list_files(tmp_path / "train", Layout("filenames"))


# ------------------------------------------------------------------- finding the photos


def test_the_image_root_is_petimages_the_one_folder_or_data_dir_itself(tmp_path):
    fakedata.make_petimages(tmp_path / "a", per_class=1, broken=False)
    assert layouts.find_image_root(tmp_path / "a") == tmp_path / "a" / "PetImages"
    pets = fakedata.make_petimages(tmp_path / "b", per_class=1, broken=False)
    pets.rename(tmp_path / "b" / "MyPhotos")
    (tmp_path / "b" / "cache").mkdir()  # the series' decoded cache is no photo folder
    assert layouts.find_image_root(tmp_path / "b") == tmp_path / "b" / "MyPhotos"
    for name in ("Bird", "Cat", "cache", ".hidden", "__MACOSX"):
        (tmp_path / "c" / name).mkdir(parents=True)
    assert layouts.find_image_root(tmp_path / "c") == tmp_path / "c"
    assert [p.name for p in layouts.class_folders(tmp_path / "c")] == ["Bird", "Cat"]
    assert layouts.find_image_root(tmp_path / "d") is None


def test_photos_named_as_labels_beside_the_series_own_files(tmp_path):
    """DATA_DIR itself holds the photos: the manifest and the archive there are no class."""
    fakedata.make_named(tmp_path, per_class=3)
    (tmp_path / "manifest.csv").write_text("path,label\n")
    (tmp_path / "dataset.zip").write_bytes(b"PK")
    table = layouts.read_labels(tmp_path, Layout("filenames"))
    assert table["label"].value_counts().to_dict() == {"cat": 3, "dog": 3}


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            {"LABELS": "xml"},
            "LABELS='xml' (given) is not valid: use one of 'folders', 'filenames', 'csv'",
        ),
        ({"LABELS": "filenames", "LABEL_PATTERN": "(cat"}, "LABEL_PATTERN='(cat' is not a regular"),
        ({"LABELS": "filenames", "LABEL_PATTERN": "cat"}, "LABEL_PATTERN='cat' has no group"),
        ({"LABEL_PATTERN": "^(x)"}, "LABEL_PATTERN='^(x)' is only read with LABELS='filenames'"),
        ({"LABELS_CSV": "a.csv"}, "LABELS_CSV='a.csv' is only read with LABELS='csv', not"),
    ],
)
def test_wrong_label_parameters_name_the_parameter(cell, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        config.make_config(**cell)


def test_label_parameters_make_the_layout(tmp_path):
    assert config.make_config().layout == Layout("folders")
    cfg = config.make_config(DATA_DIR=str(tmp_path), LABELS="csv", LABELS_CSV="x/l.csv")
    assert cfg.layout == Layout("csv", csv_path=tmp_path / "x" / "l.csv")
    assert cfg.to_dict()["layout"]["csv_path"] == str(tmp_path / "x" / "l.csv")
