from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import time
import traceback
import zipfile

import pytest

import fakedata
from catsdogs_helpers import downloading
from catsdogs_helpers.downloading import DownloadError, UnsafeArchiveError

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)


def test_download_verifies_and_leaves_no_part_file(tmp_path):
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    with fakedata.serve({"/a.zip": PAYLOAD}) as (base, handler):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", sha256=sha,
                                   progress=False)  # fmt: skip
        assert out.read_bytes() == PAYLOAD
        assert not (tmp_path / "a.zip.part").exists()
        downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
        assert len(handler.requests) == 1, "a finished download is not fetched again"


def test_cut_connection_resumes_from_where_it_stopped(tmp_path):
    cut = 1024 * 1024
    with fakedata.serve({"/a.zip": PAYLOAD}, drop_after=cut) as (base, handler):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert handler.requests[0]["range"] is None
    assert handler.requests[1]["range"] == f"bytes={cut}-"


def test_partial_file_from_an_earlier_session_is_resumed(tmp_path):
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:5000])
    with fakedata.serve({"/a.zip": PAYLOAD}) as (base, handler):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert handler.requests[0]["range"] == "bytes=5000-"


def test_server_ignoring_ranges_restarts_cleanly(tmp_path):
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:5000])
    with fakedata.serve({"/a.zip": PAYLOAD}, ranges=False) as (base, _):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert out.read_bytes() == PAYLOAD


def test_hash_mismatch_is_moved_aside_not_used(tmp_path):
    with fakedata.serve({"/a.zip": PAYLOAD}) as (base, _):
        with pytest.raises(DownloadError, match="sha256"):
            downloading.download(f"{base}/a.zip", tmp_path / "a.zip", sha256="0" * 64,
                                 progress=False)  # fmt: skip
    assert not (tmp_path / "a.zip").exists()
    assert [p.name.startswith("a.zip.part.bad-") for p in tmp_path.iterdir()] == [True]


def test_no_network_is_a_quick_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/kagglecatsanddogs_5340.zip"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        downloading.download(url, tmp_path / "a.zip", progress=False)
    assert time.perf_counter() - start < 10
    assert url in str(err.value) and "DATASET_URL" in str(err.value)


def test_http_error_names_the_status(tmp_path):
    with fakedata.serve({}) as (base, _), pytest.raises(DownloadError, match="HTTP 404"):
        downloading.download(f"{base}/missing.zip", tmp_path / "m.zip", progress=False)


def _assert_one_clear_line(err: BaseException, *parts: str) -> None:
    """The message holds every part, on one line, with no urllib traceback chained to it."""
    message = str(err)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert err.__cause__ is None and err.__suppress_context__ is True
    shown = "".join(traceback.format_exception(err))
    assert "During handling" not in shown and "urllib" not in shown


@pytest.mark.parametrize(("status", "reason"), [(404, "Not Found"), (500, "Internal Server Error")])
def test_http_errors_name_dataset_url_in_one_line(tmp_path, status, reason):
    with fakedata.serve({"/pets.zip": status}) as (base, _):
        url = f"{base}/pets.zip"
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(tmp_path / "data", url, progress=False)
    _assert_one_clear_line(
        err.value, "DATASET_URL", url, f"HTTP {status} {reason}", "Check the address",
        "path of a .zip you already have",
    )  # fmt: skip
    assert not list((tmp_path / "data").glob("*.part")), "nothing half-written is left"


def test_connection_refused_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/pets.zip"
    with pytest.raises(DownloadError) as err:
        downloading.prepare_dataset(tmp_path / "data", url, progress=False)
    _assert_one_clear_line(err.value, "DATASET_URL", url, "Connection refused", ".zip")


def _zip_with(tmp_path, name, data=b"x", *, symlink=False):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return archive


@pytest.mark.parametrize(
    ("name", "symlink", "why"),
    [
        ("../outside.txt", False, "leaves the target"),
        ("PetImages/../../outside.txt", False, "leaves the target"),
        ("/etc/passwd-copy", False, "absolute path"),
        ("PetImages/link", True, "symbolic link"),
    ],
)
def test_extraction_refuses_entries_that_escape(tmp_path, name, symlink, why):
    archive = _zip_with(tmp_path, name, b"/etc/passwd" if symlink else b"x", symlink=symlink)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=why):
        downloading.extract_zip(archive, target, progress=False)
    assert not (tmp_path / "outside.txt").exists()
    assert list(target.iterdir()) == []


def test_extraction_caps_size_and_count(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PetImages/Cat/big.jpg", bytes(2_000_000))
        zf.writestr("PetImages/Cat/a.jpg", b"a")
    with pytest.raises(UnsafeArchiveError, match="over the cap"):
        downloading.extract_zip(archive, tmp_path / "t", max_bytes=1_000_000, progress=False)
    with pytest.raises(UnsafeArchiveError, match="2 entries, over the cap of 1"):
        downloading.extract_zip(archive, tmp_path / "t", max_files=1, progress=False)


def test_prepare_dataset_downloads_extracts_then_reuses(tmp_path, petimages):
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    data = tmp_path / "data"
    with fakedata.serve({"/pets.zip": archive.read_bytes()}) as (base, handler):
        root = downloading.prepare_dataset(data, f"{base}/pets.zip", progress=False)
        assert root == data / "PetImages"
        assert [p.name for p in downloading.class_folders(root)] == ["Cat", "Dog"]
        assert (root / "Cat" / "0.jpg").read_bytes() == (petimages / "Cat" / "0.jpg").read_bytes()
        again = downloading.prepare_dataset(data, f"{base}/pets.zip", progress=False)
        assert again == root and len(handler.requests) == 1
    assert not list(data.glob(".extracting-*"))


def test_prepare_dataset_takes_a_local_zip(tmp_path, petimages):
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    root = downloading.prepare_dataset(tmp_path / "data", str(archive), progress=False)
    assert (root / "Dog" / "0.jpg").is_file()
    with pytest.raises(DownloadError, match="not a file"):
        downloading.prepare_dataset(tmp_path / "other", str(tmp_path / "nope.zip"))


#: Zeros behind about 300 kB: the same 1,000:1 ratio as a 3 MB zip that expands to 3 GiB,
#: which takes about 20 s to build here (its refusal takes a millisecond, like this one's).
BOMB_BYTES = 300 * 1024**2


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A zip of one entry that expands about 1,000-fold, to BOMB_BYTES of zeros (written in
    a stream, so building it takes about two seconds and little disk)."""
    archive = tmp_path_factory.mktemp("bomb") / "pets.zip"
    zeros = bytes(1 << 22)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("PetImages/Cat/0.jpg")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as entry:
            for _ in range(BOMB_BYTES // len(zeros)):
                entry.write(zeros)
    return archive


def test_an_archive_bomb_is_refused_within_seconds_leaving_nothing(tmp_path, bomb):
    assert bomb.stat().st_size < BOMB_BYTES / 500
    target = tmp_path / "data"
    start = time.perf_counter()
    with pytest.raises(UnsafeArchiveError) as err:
        downloading.extract_zip(bomb, target, progress=False)
    assert time.perf_counter() - start < 5
    assert f"expand to {BOMB_BYTES:,}" in str(err.value) and "archive bomb" in str(err.value)
    assert "PetImages/Cat/0.jpg" in str(err.value)
    assert list(target.iterdir()) == []


def test_a_downloaded_archive_bomb_is_refused_before_extraction(tmp_path, bomb):
    data = tmp_path / "data"
    with fakedata.serve({"/pets.zip": bomb.read_bytes()}) as (base, _):
        with pytest.raises(UnsafeArchiveError, match="archive bomb"):
            downloading.prepare_dataset(data, f"{base}/pets.zip", progress=False)
    assert not (data / "PetImages").exists() and not list(data.glob(".extracting-*"))


def test_photos_that_barely_compress_are_not_taken_for_a_bomb(tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PetImages/Cat/big.jpg", os.urandom(3_000_000))
        zf.writestr("PetImages/Cat/small.txt", bytes(500_000))  # compresses, but is small
    downloading.extract_zip(archive, tmp_path / "t", progress=False)
    assert (tmp_path / "t" / "PetImages" / "Cat" / "big.jpg").stat().st_size == 3_000_000


def test_an_archive_larger_than_the_free_space_is_refused(tmp_path, petimages, monkeypatch):
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(downloading.shutil, "disk_usage", lambda _: usage._replace(free=80_000))
    target = tmp_path / "data"
    with pytest.raises(
        UnsafeArchiveError, match=r"would unpack to [\d.]+ MB, but only 0\.1 MB is free"
    ):
        downloading.extract_zip(archive, target, progress=False)
    assert list(target.iterdir()) == []


def _lie_about_size(archive, declared: int) -> None:
    """Change the uncompressed size that the archive's one entry declares, in both headers."""
    data = bytearray(archive.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.rfind(b"PK\x01\x02")
    data[local + 22 : local + 26] = declared.to_bytes(4, "little")
    data[central + 24 : central + 28] = declared.to_bytes(4, "little")
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("method", "declared"),
    [
        (zipfile.ZIP_DEFLATED, 1000),  # a bomb that declares a small size
        (zipfile.ZIP_STORED, 1000),
        (zipfile.ZIP_STORED, 300_000),  # holds less than it declares
    ],
    ids=["deflated-declares-less", "stored-declares-less", "stored-declares-more"],
)
def test_a_header_that_lies_about_sizes_is_refused_leaving_nothing(tmp_path, method, declared):
    archive = tmp_path / "pets.zip"
    content = bytes(2_000_000) if method == zipfile.ZIP_DEFLATED else os.urandom(200_000)
    with zipfile.ZipFile(archive, "w", method) as zf:
        zf.writestr("PetImages/Cat/0.jpg", content)
    _lie_about_size(archive, declared)
    target = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError, match=f"declares {declared:,} bytes"):
        downloading.extract_zip(archive, target, progress=False)
    assert list(target.iterdir()) == []


def test_a_finished_download_is_on_the_disk_before_it_counts(tmp_path, monkeypatch):
    flushed: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(os.fstat(fd).st_ino), real(fd)))
    with fakedata.serve({"/a.zip": PAYLOAD}) as (base, _):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert out.stat().st_ino in flushed and tmp_path.stat().st_ino in flushed
