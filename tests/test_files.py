"""Atomic, durable writes: concurrent writers of one file never disturb each other, and
nothing is called written before it is on the disk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import fakedata
from catsdogs_helpers import datasets, plumbing

WRITER = """
import sys
from catsdogs_helpers.plumbing import atomic_path
target, mark, times = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
for _ in range(times):
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            for _ in range(64):
                f.write(mark * 4096)
"""


def _whole(path, marks: set[bytes], size: int) -> bool:
    data = path.read_bytes()
    return len(data) == size and data[:1] in marks and data == data[:1] * size


def test_threads_writing_one_file_at_once_all_succeed_and_it_stays_whole(tmp_path):
    target = tmp_path / "manifest.csv"
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def write(mark: bytes) -> None:
        try:
            for _ in range(10):
                with plumbing.atomic_path(target) as tmp:
                    with open(tmp, "wb") as f:
                        barrier.wait(timeout=10)  # every writer has its file open now
                        f.write(mark * 100_000)
        except BaseException as err:  # reported below, with the thread's own message
            errors.append(err)

    threads = [threading.Thread(target=write, args=(bytes([65 + i]),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _whole(target, {bytes([65 + i]) for i in range(6)}, 100_000)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"], "no temporary file left"


def test_processes_writing_one_file_at_once_both_succeed(tmp_path):
    target = tmp_path / "split.csv"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), mark, "40"],
            env=os.environ,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mark in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _whole(target, {b"a", b"b"}, 64 * 4096)
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]


@pytest.fixture
def fsyncs(monkeypatch) -> list[tuple[int, bool]]:
    """Every ``os.fsync`` call as ``(inode, is_folder)``, in order."""
    calls: list[tuple[int, bool]] = []
    real = os.fsync

    def record(fd: int) -> None:
        info = os.fstat(fd)
        calls.append((info.st_ino, stat.S_ISDIR(info.st_mode)))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls


def test_a_write_is_on_the_disk_before_it_is_renamed_and_the_folder_after(tmp_path, fsyncs):
    target = tmp_path / "metrics.json"
    with plumbing.atomic_path(target) as tmp:
        tmp.write_text('{"test_accuracy": 0.9}')
        assert not fsyncs, "nothing is flushed while the block still writes"
    written = target.stat().st_ino
    assert fsyncs == [(written, False), (tmp_path.stat().st_ino, True)]


def test_a_write_that_fails_is_not_flushed_nor_renamed(tmp_path, fsyncs):
    target = tmp_path / "history.csv"
    with pytest.raises(ValueError), plumbing.atomic_path(target) as tmp:
        tmp.write_text("epoch\n1\n")
        raise ValueError("the writer failed")
    assert fsyncs == [] and list(tmp_path.iterdir()) == []


def test_temporary_files_have_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with plumbing.atomic_path(tmp_path / "summary.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644


def test_the_decoded_cache_is_on_the_disk_before_it_is_in_place(tmp_path, fsyncs):
    root = fakedata.make_petimages(tmp_path, per_class=4, broken=False)
    names = [f"{c}/{i}.jpg" for c in ("Cat", "Dog") for i in range(4)]
    rows = pd.DataFrame({"path": names, "sha256": ["x"] * len(names)})
    cache = datasets.build_cache(root, rows, tmp_path / "cache", 16, workers=1, progress=False)
    flushed = {inode for inode, _ in fsyncs}
    assert cache.path.stat().st_ino in flushed
    assert cache.path.with_name(cache.path.stem + ".ok.npy").stat().st_ino in flushed
    assert (tmp_path / "cache").stat().st_ino in flushed, "the renames are flushed too"
    assert cache.array().shape == (8, 16, 16, 3) and cache.ok.all()
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".npy"]
    assert not [n for n in leftovers if n.endswith((".tmp", ".partial"))], leftovers
    np.testing.assert_array_equal(np.load(cache.path), cache.array())


def test_figures_are_saved_atomically_in_their_format(tmp_path):
    import matplotlib.pyplot as plt

    from catsdogs_helpers import plotting

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plotting.save_figure(fig, tmp_path / "figures" / "roc.png")
    plt.close(fig)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in path.parent.iterdir()] == ["roc.png"]


def test_stale_temporary_files_are_the_packages_own_names_only(tmp_path):
    target = tmp_path / "last.pt"
    stale = [plumbing.unique_sibling(target, ".tmp") for _ in range(2)]
    others = ["last.pt.tmp", "last.pt.0123456789AB.tmp", "last.pt.0123456789a.tmp"]
    others += ["last.pt.0123456789ab.tmp.keep", "best.pt.0123456789ab.tmp", "notes.txt"]
    others += ["xlast.pt.0123456789ab.tmp", "last.pt.0123456789ab.partial"]
    for name in others:
        (tmp_path / name).write_text("not ours to remove")
    (tmp_path / "last.pt.abcdefabcdef.tmp").mkdir()
    assert plumbing.stale_siblings(target) == sorted(stale)
    assert plumbing.remove_stale_temporaries(target) == sorted(stale)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*others, "last.pt.abcdefabcdef.tmp"])
    assert plumbing.remove_stale_temporaries(tmp_path / "missing" / "x.csv") == []
