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


# ------------------------------------------------------------------ hostile servers


def _no_leftovers(folder, name: str) -> None:
    """Nothing a later run could take for a finished (or resumable) download is left."""
    assert not (folder / name).exists()
    assert not list(folder.glob("*.part")), "no partial file"


def test_a_stream_without_a_size_stops_at_the_cap_for_unknown_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(downloading, "MAX_UNKNOWN_BYTES", 1024**2)
    data = tmp_path / "data"
    with fakedata.serve_scripted(fakedata.endless_stream()) as (base, _):
        url = f"{base}/pets.zip"
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(data, url, progress=False)
    message = str(err.value)
    assert "\n" not in message and "DATASET_URL" in message and url in message
    assert "1,048,576 bytes" in message and "MAX_UNKNOWN_BYTES" in message
    _no_leftovers(data, "pets.zip")


def test_the_default_archive_never_grows_past_its_published_size(tmp_path, monkeypatch):
    data = tmp_path / "data"
    with fakedata.serve_scripted(fakedata.endless_stream()) as (base, _):
        url = f"{base}/kagglecatsanddogs_5340.zip"
        monkeypatch.setattr(downloading, "DEFAULT_DATASET_URL", url)
        monkeypatch.setattr(downloading, "DEFAULT_ARCHIVE_SIZE", 300_000)
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(data, url, progress=False)
    message = str(err.value)
    assert "\n" not in message and "DATASET_URL" in message and url in message
    assert "300,000 bytes" in message
    _no_leftovers(data, "kagglecatsanddogs_5340.zip")


def test_a_server_gone_silent_times_out_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(downloading, "READ_TIMEOUT", 0.3)
    monkeypatch.setattr(downloading, "RETRY_WAIT", 0.0)
    start = time.perf_counter()
    with fakedata.serve_scripted(fakedata.goes_silent) as (base, handler):
        url = f"{base}/pets.zip"
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(tmp_path / "data", url, progress=False)
    assert time.perf_counter() - start < 15
    message = str(err.value)
    assert "\n" not in message and "timed out" in message
    assert "DATASET_URL" in message and url in message
    assert len(handler.requests) > 1, "a stall is retried, resuming"


@pytest.mark.parametrize("offset", [0, 1000], ids=["from-zero", "from-elsewhere"])
def test_a_resume_that_starts_elsewhere_is_never_appended(tmp_path, offset):
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:5000])
    with fakedata.serve_scripted(fakedata.wrong_ranges(PAYLOAD, offset)) as (base, handler):
        out = downloading.download(f"{base}/a.zip", tmp_path / "a.zip", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert handler.requests[0]["range"] == "bytes=5000-"
    assert list(tmp_path.iterdir()) == [out], "nothing moved aside: nothing went wrong"


def test_only_the_latest_bad_copy_is_kept(tmp_path):
    older = tmp_path / "a.zip.part.bad-20000101-000000"
    older.write_bytes(b"an earlier run's bad copy")
    with fakedata.serve({"/a.zip": PAYLOAD}) as (base, _):
        for _ in range(2):
            with pytest.raises(DownloadError, match="sha256"):
                downloading.download(f"{base}/a.zip", tmp_path / "a.zip", sha256="0" * 64,
                                     progress=False)  # fmt: skip
    bad = list(tmp_path.iterdir())
    assert len(bad) == 1 and bad[0].name.startswith("a.zip.part.bad-")
    assert bad[0].read_bytes() == PAYLOAD


def _serve_as_default(monkeypatch, payload: bytes, base: str) -> str:
    url = f"{base}/kagglecatsanddogs_5340.zip"
    monkeypatch.setattr(downloading, "DEFAULT_DATASET_URL", url)
    monkeypatch.setattr(downloading, "DEFAULT_ARCHIVE_SIZE", len(payload))
    monkeypatch.setattr(downloading, "DEFAULT_ARCHIVE_SHA256", hashlib.sha256(payload).hexdigest())
    return url


def test_the_default_archive_is_checked_against_its_published_hash(tmp_path, monkeypatch):
    assert downloading.DEFAULT_ARCHIVE_SIZE == 824_887_076
    assert downloading.DEFAULT_ARCHIVE_SHA256 == (
        "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"
    )
    tampered = PAYLOAD[:-1] + b"!"
    data = tmp_path / "data"
    with fakedata.serve({"/kagglecatsanddogs_5340.zip": tampered}) as (base, _):
        url = _serve_as_default(monkeypatch, PAYLOAD, base)
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(data, url, progress=False)
    message = str(err.value)
    assert "\n" not in message and "DATASET_URL" in message
    assert hashlib.sha256(tampered).hexdigest() in message, "what was found"
    assert downloading.DEFAULT_ARCHIVE_SHA256 in message, "what was expected"
    assert "run again" in message, "what to do"
    _no_leftovers(data, "kagglecatsanddogs_5340.zip")


@pytest.mark.parametrize("announced", [True, False], ids=["announced", "streamed"])
def test_the_default_archive_is_checked_against_its_published_size(
    tmp_path, monkeypatch, announced
):
    monkeypatch.setattr(downloading, "RETRY_WAIT", 0.0)  # the short stream is retried
    data, sent = tmp_path / "data", 640 * 1024
    if announced:  # a Content-Length that is not the published size: refused before a byte
        server = fakedata.serve({"/kagglecatsanddogs_5340.zip": PAYLOAD[:sent]})
    else:  # no size stated, and the stream stops short of the published size
        server = fakedata.serve_scripted(fakedata.endless_stream(total=sent))
    with server as (base, _):
        url = _serve_as_default(monkeypatch, PAYLOAD, base)
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(data, url, progress=False)
    message = str(err.value)
    assert "\n" not in message and "DATASET_URL" in message and url in message
    assert f"{sent:,}" in message and f"{len(PAYLOAD):,}" in message, "found and expected"
    assert "path of a .zip you already have" in message, "what to do"
    assert not (data / "kagglecatsanddogs_5340.zip").exists()


def test_the_default_archive_that_matches_its_published_checks_is_used(
    tmp_path, monkeypatch, petimages
):
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip").read_bytes()
    with fakedata.serve({"/kagglecatsanddogs_5340.zip": archive}) as (base, _):
        url = _serve_as_default(monkeypatch, archive, base)
        root = downloading.prepare_dataset(tmp_path / "data", url, progress=False)
    assert (root / "Cat" / "0.jpg").is_file()


def _encrypted_zip(tmp_path):
    """A zip whose one entry says it is encrypted (the flag zipfile reads, in both headers)."""
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("PetImages/Cat/0.jpg", b"not really encrypted")
    data = bytearray(archive.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.rfind(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    archive.write_bytes(bytes(data))
    return archive


@pytest.mark.parametrize("kind", ["long-name", "encrypted"])
def test_unextractable_entries_get_one_line_errors(tmp_path, kind):
    if kind == "long-name":
        archive = _zip_with(tmp_path, "PetImages/Cat/" + "x" * 296 + ".jpg")
        why = "bytes long"
    else:
        archive, why = _encrypted_zip(tmp_path), "encrypted"
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as err:
        downloading.extract_zip(archive, target, progress=False)
    assert "\n" not in str(err.value) and why in str(err.value)
    assert archive.name in str(err.value)
    assert list(target.iterdir()) == []


def test_a_local_file_is_never_called_deletable(tmp_path):
    mine = tmp_path / "notes.zip"
    mine.write_text("my own notes, not a zip\n")
    for local in (mine, "/etc/passwd"):
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(tmp_path / "data", str(local), progress=False)
        message = str(err.value)
        assert "\n" not in message and str(local) in message and "DATASET_URL" in message
        assert "delete" not in message.lower()
    assert mine.read_text() == "my own notes, not a zip\n"


def test_a_local_damaged_zip_is_never_called_deletable(tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("PetImages/Cat/0.jpg", os.urandom(200_000))
    _lie_about_size(archive, 1000)
    with pytest.raises(UnsafeArchiveError) as err:
        downloading.prepare_dataset(tmp_path / "data", str(archive), progress=False)
    assert "declares 1,000 bytes" in str(err.value) and "delete" not in str(err.value).lower()


def test_a_downloaded_file_that_is_no_zip_may_be_deleted(tmp_path):
    data = tmp_path / "data"
    with fakedata.serve({"/pets.zip": b"<html>a login page</html>"}) as (base, _):
        with pytest.raises(DownloadError) as err:
            downloading.prepare_dataset(data, f"{base}/pets.zip", progress=False)
    assert f"delete {data / 'pets.zip'}" in str(err.value)


def test_a_failed_download_leaves_no_lock_file(tmp_path):
    data = tmp_path / "data"
    with fakedata.serve({}) as (base, _), pytest.raises(DownloadError, match="HTTP 404"):
        downloading.prepare_dataset(data, f"{base}/missing.zip", progress=False)
    assert not (data / ".download.lock").exists()
