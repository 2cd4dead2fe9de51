"""Runs at once: processes sharing a data folder take turns at the work done once per
folder and reuse each other's results; a run folder is trained by one process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from filelock import Timeout

import fakedata
from catsdogs_helpers import config, downloading, plumbing, runs, splitting, validating

PREPARE = """
import sys, time
from pathlib import Path
from catsdogs_helpers import config, workflow
run, url, ready, go = sys.argv[1:5]
cfg = config.make_config(RUN_NAME=run, DATASET_URL=url, IMAGE_SIZE=48, NUM_WORKERS=0)
Path(ready).touch()
while not Path(go).exists():  # start together with the other process
    time.sleep(0.01)
split = workflow.ensure_split(cfg, progress=False)
cache = workflow.ensure_cache(cfg, split, progress=False)
print(cache.path.name)
"""

HOLD = """
import sys
from pathlib import Path
from catsdogs_helpers import runs
with runs.claim(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it (or kills this process)
"""


def _start_together(tmp_path, url: str, names: list[str]) -> list[subprocess.Popen]:
    """Start one PREPARE process per run name; they begin their work at the same moment."""
    go = tmp_path / "go"
    procs = []
    for name in names:
        ready = tmp_path / f"ready-{name}"
        cmd = [sys.executable, "-c", PREPARE, name, url, str(ready), str(go)]
        procs.append(subprocess.Popen(cmd, env=os.environ, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{name}").exists() for name in names):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)
    go.touch()
    return procs


def test_two_runs_preparing_one_data_folder_at_once_both_finish(tmp_path, petimages):
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    data = tmp_path / "data"  # CATSDOGS_DATA_DIR, shared by both runs
    with fakedata.serve({"/pets.zip": archive.read_bytes()}) as (base, handler):
        procs = _start_together(tmp_path, f"{base}/pets.zip", ["first", "second"])
        outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert len(handler.requests) == 1, "downloaded once, by one of them"
    manifest = validating.read_manifest(data / "manifest.csv")
    on_disk = validating.list_files(data / "PetImages")
    assert sorted(manifest["path"]) == sorted(on_disk["path"])
    assert (manifest["reason"] != "").all()
    splits = [
        splitting.read_split(config.run_dir(run) / "split.csv") for run in ("first", "second")
    ]
    assert splits[0].equals(splits[1]), "the same data and seed give the same split"
    caches = sorted((data / "cache").glob("images-*px-*[0-9a-f].npy"))
    assert len(caches) == 1 and {out.strip() for out, _ in outputs} == {caches[0].name}
    used = splits[0]["split"].isin(splitting.SPLITS).sum()
    assert np.load(caches[0], mmap_mode="r").shape[0] == used
    leftovers = [p for p in data.rglob("*") if p.name.endswith((".tmp", ".partial", ".part"))]
    assert leftovers == [] and not list(data.glob(".extracting-*"))


def test_a_second_holder_waits_for_the_first(tmp_path):
    lock = tmp_path / "manifest.csv.lock"
    entered = threading.Event()

    def second() -> None:
        with plumbing.held(lock, "validating the photos"):
            entered.set()

    with plumbing.held(lock, "validating the photos"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert not entered.is_set(), "the second waits while the first holds the lock"
    thread.join(timeout=30)
    assert entered.is_set(), "and goes on once it is released"


def test_a_holder_that_will_not_wait_is_told_at_once(tmp_path):
    lock = tmp_path / ".download.lock"
    with plumbing.held(lock, "downloading"):
        result: list[BaseException] = []
        thread = threading.Thread(target=lambda: _try(lock, result))
        thread.start()
        thread.join(timeout=30)
    assert len(result) == 1 and isinstance(result[0], Timeout)


def _try(lock, result: list) -> None:
    try:
        with plumbing.held(lock, "downloading", wait=False):
            pass
    except Timeout as err:
        result.append(err)


def test_a_run_being_trained_elsewhere_stops_with_its_name(tmp_path, petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    cfg = config.make_config(RUN_NAME="busy", EPOCHS=1, IMAGE_SIZE=48, NUM_WORKERS=0)
    cfg.run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cfg.run_dir)], env=os.environ,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        from catsdogs_helpers import workflow

        with pytest.raises(runs.RunConflict, match="run 'busy' .* trained by another process"):
            workflow.train_run(cfg, progress=False)
        assert not (cfg.run_dir / "last.pt").exists(), "nothing was trained into it"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with runs.claim(cfg.run_dir):  # the lock went with the killed process
        pass


def test_prepare_dataset_reuses_what_another_process_made_meanwhile(tmp_path, petimages):
    data = tmp_path / "data"
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    made = threading.Event()

    def other_process() -> None:
        with plumbing.held(data / ".download.lock", "downloading and extracting the data set"):
            made.set()
            time.sleep(0.3)
            downloading.extract_zip(archive, data, progress=False)

    thread = threading.Thread(target=other_process)
    thread.start()
    made.wait(timeout=30)
    with fakedata.serve({"/pets.zip": archive.read_bytes()}) as (base, handler):
        root = downloading.prepare_dataset(data, f"{base}/pets.zip", progress=False)
    thread.join(timeout=30)
    assert root == data / "PetImages" and (root / "Cat" / "0.jpg").is_file()
    assert handler.requests == [], "it waited, then found the photos: nothing downloaded"
