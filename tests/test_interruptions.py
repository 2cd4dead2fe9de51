"""Runs that die: a training process killed mid-epoch resumes to the same result; disk
trouble gives a message naming the folder and leaves nothing a re-run would trust."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fakedata
from catsdogs_helpers import config, datasets, downloading, training, validating, workflow

SETTINGS = {"EPOCHS": 6, "IMAGE_SIZE": 48, "BATCH_SIZE": 16, "NUM_WORKERS": 0}
TRAIN = """
import sys
from catsdogs_helpers import config, workflow
cfg = config.make_config(RUN_NAME=sys.argv[1], EPOCHS=6, IMAGE_SIZE=48, BATCH_SIZE=16,
                         NUM_WORKERS=0, RESUME=sys.argv[2] == "1")
workflow.train_run(cfg, progress=False)
"""


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    fakedata.make_petimages(tmp_path / "d", per_class=80)
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "d"))
    return tmp_path / "d"


def _summary(run: str) -> dict:
    path = config.run_dir(run) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(data_dir):
    _, reference = workflow.train_run(config.make_config(RUN_NAME="ref", **SETTINGS),
                                      progress=False)  # fmt: skip
    config.run_dir("killed").mkdir(parents=True)
    (config.run_dir("killed") / "split.csv").write_bytes(
        (config.run_dir("ref") / "split.csv").read_bytes()
    )
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, "killed", "0"], env=os.environ)
    try:
        deadline = time.monotonic() + 120
        while _summary("killed").get("epochs_run", 0) < 1:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # during epoch 2
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = training.load_checkpoint(config.run_dir("killed") / "last.pt")
    assert not killed_at["finished"] and 1 <= killed_at["epoch"] < 6
    assert not list(config.run_dir("killed").glob("*.tmp"))

    with pytest.raises(RuntimeError, match="RESUME=True"):
        workflow.train_run(config.make_config(RUN_NAME="killed", **SETTINGS), progress=False)
    _, resumed = workflow.train_run(
        config.make_config(RUN_NAME="killed", RESUME=True, **SETTINGS), progress=False
    )
    assert resumed["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(resumed["train_loss"], reference["train_loss"], rtol=0.02)
    np.testing.assert_allclose(resumed["val_acc"], reference["val_acc"], atol=0.05)


def test_full_disk_while_downloading_names_the_folder(tmp_path, monkeypatch):
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and ("w" in mode or "a" in mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with fakedata.serve({"/a.zip": b"x" * 1000}) as (base, _):
        with pytest.raises(downloading.DownloadError, match=str(tmp_path)):
            downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert not (tmp_path / "a.zip").exists()


def test_full_disk_while_caching_names_the_folder_and_trusts_nothing(data_dir, monkeypatch):
    cfg = config.make_config(RUN_NAME="disk", **SETTINGS)
    split = workflow.ensure_split(cfg, progress=False)
    real = np.lib.format.open_memmap

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)
    with pytest.raises(OSError, match="cache"):
        workflow.ensure_cache(cfg, split, progress=False)
    monkeypatch.setattr(np.lib.format, "open_memmap", real)
    assert not list((data_dir / "cache").glob("*.npy"))
    cache = workflow.ensure_cache(cfg, split, progress=False)
    assert cache.array().shape[1:] == (cfg.cache_size, cfg.cache_size, 3)


def test_failed_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        open(path, "wb").write(b"half")  # noqa: SIM115
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*last\.pt"):
        training._atomic_save({}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    from catsdogs_helpers import models

    state = models.create_model("resnet34", 2).state_dict()
    path = tmp_path / "best.pt"
    datasets.torch.save({"model": state, "model_name": "resnet18", "class_names": ["a", "b"]},
                        path)  # fmt: skip
    with pytest.raises(training.CheckpointError, match="holds no model this package can rebuild"):
        training.load_model(path)


def test_a_write_that_fails_keeps_the_previous_file(tmp_path):
    from catsdogs_helpers.plumbing import atomic_path

    path = tmp_path / "history.csv"
    path.write_text("epoch\n1\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("epoch\n1\n2")
        raise KeyboardInterrupt  # killed half-way through writing
    assert path.read_text() == "epoch\n1\n"
    assert list(tmp_path.iterdir()) == [path]


def test_a_save_killed_mid_write_leaves_no_temporary_file_after_the_next_run(data_dir):
    from catsdogs_helpers.plumbing import unique_sibling

    cfg = config.make_config(RUN_NAME="stale", **{**SETTINGS, "EPOCHS": 1})
    workflow.train_run(cfg, progress=False)
    run_dir = cfg.run_dir
    written = ("last.pt", "best.pt", "history.csv", "summary.json", "train_pipeline.json")
    stale = [unique_sibling(run_dir / name, ".tmp") for name in written]
    for path in stale:
        path.write_bytes(b"half a checkpoint")  # what a SIGKILL while saving leaves
    kept = [run_dir / "split.csv.0123456789ab.tmp", run_dir / "mine.tmp"]
    for path in kept:
        path.write_text("not a temporary file of the run's saves")
    workflow.train_run(cfg, progress=False)  # finished: loaded, nothing written
    assert not [p for p in stale if p.exists()]
    assert all(p.is_file() for p in kept)
    assert sorted(p.name for p in run_dir.glob("*.tmp")) == sorted(p.name for p in kept)


def test_a_killed_manifest_write_leaves_no_temporary_file_after_the_next_validation(data_dir):
    from catsdogs_helpers.plumbing import unique_sibling

    photos, manifest = data_dir / "PetImages", data_dir / "manifest.csv"
    validating.validate_folder(photos, manifest, progress=False)
    stale = unique_sibling(manifest, ".tmp")
    stale.write_text("path,label\nhalf a manifest")
    validating.validate_folder(photos, manifest, progress=False)
    assert not stale.exists() and manifest.is_file()
