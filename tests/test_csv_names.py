"""Every CSV the package writes (the manifest, a split, predictions) gives back every path a
file system can hold: commas, quotes, carriage returns, line breaks, tabs, emoji, a leading
'-', and names that are not UTF-8 (Linux names are bytes; Python holds the undecodable ones
as lone surrogates)."""

from __future__ import annotations

import os
import random
from dataclasses import asdict

import pandas as pd
import pytest
import torch

import fakedata
from catsdogs_helpers import (
    calibration,
    config,
    plumbing,
    predicting,
    splitting,
    validating,
    workflow,
)
from catsdogs_helpers.tools import predict
from catsdogs_helpers.transforms import Preprocessing

#: What generated names are made of, as the bytes a file name holds: the undecodable ones
#: are a lone byte, a lead byte without its follower and a cut emoji.
PARTS = [
    b" ",
    b",",
    b'"',
    b"'",
    b"\r",
    b"\n",
    b"\t",
    b"\r\n",
    "😺".encode(),
    "é".encode(),
    b"\\",
    b"NA",
    b"0",
    b"x",
    b";",
    b"#",
    b"\xff",
    b"\xc3",
    b"\xf0\x9f\x98",
    b".jpg",
]
#: One of each kind, as files in a class folder: the names the reports came with, and more.
ODD = [
    b"cat\xff.jpg",
    b"a\rb.jpg",
    b"c\nd.jpg",
    b"e\tf.jpg",
    b'-lead, "quoted".jpg',
    "😺 emoji.jpg".encode(),
    b"\xc3(.jpg",
    b"  spaced  .jpg",
    b"cr at end.jpg\r",
]


def _names(seed: int, count: int = 300) -> list[str]:
    """Random file names (never '/', NUL, '.' or '..'), decoded as ``os.listdir`` gives them."""
    rng = random.Random(seed)
    names = []
    for _ in range(count):
        name = b"".join(rng.choice(PARTS) for _ in range(rng.randint(1, 8)))
        names.append(os.fsdecode((b"-" if rng.random() < 0.2 else b"") + name))
    return names


def _manifest(names: list[str]) -> pd.DataFrame:
    rows = [
        {
            "path": f"{name[:5]}/{name}",
            "label": name[:5],
            **asdict(validating.Verdict(ok=True, reason="ok", note=name, sha256=f"{i:064x}")),
        }
        for i, name in enumerate(names)
    ]
    return pd.DataFrame(rows)[validating.MANIFEST_COLUMNS]


@pytest.mark.parametrize("seed", range(4))
def test_any_name_survives_every_csv_the_package_writes(tmp_path, seed):
    names = _names(seed)
    frame = pd.DataFrame({"path": names, "label": names[::-1], "p": 0.5})
    plumbing.write_csv(frame, tmp_path / "any.csv")
    back = plumbing.read_csv(tmp_path / "any.csv")
    assert back["path"].tolist() == names and back["label"].tolist() == names[::-1]

    manifest = _manifest(names)
    validating.write_manifest(manifest, tmp_path / "manifest.csv")
    pd.testing.assert_frame_equal(validating.read_manifest(tmp_path / "manifest.csv"), manifest)

    split = manifest[["path", "label", "sha256"]].assign(split="train", reason="", group=1)
    split = split[splitting.SPLIT_COLUMNS]
    splitting.save_split(split, tmp_path / "split.csv")
    pd.testing.assert_frame_equal(splitting.read_split(tmp_path / "split.csv"), split)
    splitting.save_split(split, tmp_path / "split.csv")  # the same split again: no conflict


def _odd_folder(data) -> tuple[os.PathLike, list[str]]:
    """A PetImages folder whose first photos of each class have the names of ``ODD``."""
    pets = fakedata.make_petimages(data, per_class=15, broken=False)
    for label in ("Cat", "Dog"):
        folder = os.fsencode(pets / label)
        for i, name in enumerate(ODD):
            os.rename(os.path.join(folder, b"%d.jpg" % i), os.path.join(folder, name))
    return pets, [os.fsdecode(b"Cat/" + name) for name in ODD]


def test_odd_names_go_through_notebook_02_twice(tmp_path, monkeypatch):
    """Validated, split and saved; the second run reuses every verdict and the split."""
    pets, odd = _odd_folder(tmp_path / "data")
    cfg = config.make_config(DATA_DIR=str(tmp_path / "data"), RUN_NAME="odd")
    manifest = workflow.ensure_manifest(cfg, progress=False)
    assert set(odd) <= set(manifest["path"]) and manifest["ok"].all() and len(manifest) == 30
    pd.testing.assert_frame_equal(validating.read_manifest(workflow.manifest_path(cfg)), manifest)
    split = splitting.split_dataset(manifest)
    splitting.save_split(split, workflow.split_path(cfg))
    pd.testing.assert_frame_equal(splitting.read_split(workflow.split_path(cfg)), split)

    checked = []
    original = validating.check_image
    monkeypatch.setattr(
        validating, "check_image", lambda p, **kw: checked.append(p) or original(p, **kw)
    )
    again = workflow.ensure_manifest(cfg, progress=False)
    assert checked == [], "every verdict is reused from the manifest"
    pd.testing.assert_frame_equal(again, manifest)
    splitting.save_split(splitting.split_dataset(again), workflow.split_path(cfg))  # no conflict
    assert (workflow.ensure_split(cfg, progress=False)["path"] == split["path"]).all()


class _Brightness(torch.nn.Module):
    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))
        return torch.stack([-s, s], 1)


def _classifier() -> predicting.Classifier:
    return predicting.Classifier(
        _Brightness(),
        ("Cat", "Dog"),
        Preprocessing(36, 32),
        calibration.Decision(),
        torch.device("cpu"),
        name="bright",
    )


def test_predictions_of_odd_names_read_back_row_for_row(tmp_path, monkeypatch, capsys):
    pets, odd = _odd_folder(tmp_path / "data")
    csv_path = tmp_path / "predictions.csv"
    table = predicting.predict_files(_classifier(), pets / "Cat", csv_path=csv_path)
    photos = {name.removeprefix("Cat/") for name in odd if name.endswith(".jpg")}  # by suffix
    expected = photos | {f"{i}.jpg" for i in range(len(ODD), 15)}
    assert set(table["path"]) == expected and len(table) == len(expected) == 14
    assert (table["error"] == "").all()
    back = plumbing.read_csv(csv_path)
    assert back["path"].tolist() == table["path"].tolist() and len(back) == 14
    assert back["file"].tolist() == table["file"].tolist()

    monkeypatch.setattr(predict, "load", lambda args, device: _classifier())
    out = tmp_path / "out.csv"
    command = [str(pets / "Cat"), "--run", "x", "--format", "csv", "--output", str(out)]
    assert predict.main(command) == 0
    assert "14 of 14 photos classified, written to" in capsys.readouterr().err
    written = plumbing.read_csv(out)
    assert written["path"].tolist() == table["path"].tolist()
    assert written["predicted"].tolist() == table["predicted"].tolist()


def test_odd_names_are_cached_and_trained_on(tmp_path):
    """Names that are not UTF-8, or hold control characters, go through the decoded cache
    and a training epoch (the cache's key is made from the names)."""
    _odd_folder(tmp_path / "data")
    cfg = config.make_config(
        DATA_DIR=str(tmp_path / "data"), RUN_NAME="odd", EPOCHS=1, IMAGE_SIZE=32, NUM_WORKERS=0
    )
    _, history = workflow.train_run(cfg, progress=False)
    assert len(history) == 1
