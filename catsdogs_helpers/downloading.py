"""Downloading and extracting the data set: a download resumes, never writes more than it
expects and is renamed from ``<name>.part`` only once verified; extraction is all or
nothing, and refuses unsafe archives before writing anything."""

from __future__ import annotations

import errno
import glob
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import DEFAULT_DATASET_URL, Layout
from .layouts import FOLDERS, IMAGE_ROOT_NAME, check_no_loose_photos, describe, find_image_root
from .layouts import class_folders as class_folders  # was here: still importable from here
from .plumbing import fsync_folder, held, progress_bar, replace_durably

log = logging.getLogger(__name__)

MAX_ARCHIVE_FILES = 200_000
MAX_ARCHIVE_BYTES = 8 * 1024**3  # the real archive unpacks to about 0.8 GB
#: An entry over MAX_RATIO_FROM_BYTES expanding more than this is a bomb (JPEGs barely compress).
MAX_EXPANSION_RATIO = 100
MAX_RATIO_FROM_BYTES = 1024**2
#: The longest part of an entry's name, in bytes, that most file systems take.
MAX_NAME_BYTES = 255
#: Microsoft's archive (config.DEFAULT_DATASET_URL) as published: its size and sha256.
DEFAULT_ARCHIVE_SIZE = 824_887_076
DEFAULT_ARCHIVE_SHA256 = "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"
#: The most a download that states no size (no Content-Length) may write.
MAX_UNKNOWN_BYTES = 2 * 1024**3
#: Seconds without a byte from the server before a read gives up (and the download resumes).
READ_TIMEOUT = 30.0
#: Seconds before the first retry of a cut download, more before each next (to 10).
RETRY_WAIT = 2.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}
_USER_AGENT = "catsdogs-helpers (+https://pypi.org/project/catsdogs-helpers)"
_OTHER_WAYS = (
    "or set DATASET_URL (CATSDOGS_DATASET_URL) to the path of a .zip you already have, or put "
    f"an extracted {IMAGE_ROOT_NAME}/ folder inside DATA_DIR (CATSDOGS_DATA_DIR)."
)


class DownloadError(RuntimeError):
    """The data set could not be fetched or failed verification."""


class UnsafeArchiveError(RuntimeError):
    """The archive holds entries that must not be extracted."""


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _quarantine(path: Path, why: str) -> Path:
    """Move a file that failed verification to ``<name>.bad-<time>``, replacing an earlier bad
    copy; returns where it went."""
    bad = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(bad)
    for older in path.parent.glob(f"{glob.escape(path.name)}.bad-*"):
        if older != bad:
            older.unlink(missing_ok=True)
    log.warning("%s: %s; moved aside to %s", path.name, why, bad.name)
    return bad


def _request(url: str, start: int, timeout: float):
    """The response for ``url`` from byte ``start`` on; None when the server refuses that
    range; other errors raise a one-line :class:`DownloadError`."""
    headers = {"User-Agent": _USER_AGENT} | ({"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            return None
        message = f"DATASET_URL {url} answered HTTP {err.code} {err.reason}. Check the address"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        message = f"Could not download DATASET_URL {url} ({reason}). Check your connection"
    raise DownloadError(f"{message}, {_OTHER_WAYS}") from None


def _placement(response) -> tuple[int | None, int | None]:
    """The byte the response starts at (None for a 206 without a readable Content-Range) and
    the file size it announces, if any."""
    if response.status != 206:
        length = response.headers.get("Content-Length", "").strip()
        return 0, int(length) if length.isdigit() else None
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None, None
    return int(match[1]), int(match[2]) if match[2].isdigit() else None


def _append(
    response, part: Path, start: int, total: int | None, limit: int, *, progress: bool
) -> bool:
    """Write the response into ``part`` from ``start`` on; False, with nothing past ``limit``
    written, when it runs past ``limit`` bytes."""
    in_bytes = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "disable": not progress}
    bar = progress_bar(total=total, initial=start, desc=part.name.removesuffix(".part"), **in_bytes)
    try:
        with open(part, "ab" if start else "wb") as out, bar:
            while chunk := response.read1(1 << 20):  # what came before a stall is kept
                if start + len(chunk) > limit:
                    return False
                out.write(chunk)
                start += len(chunk)
                bar.update(len(chunk))
    except OSError as err:
        if err.errno in _LOCAL_ERRNOS:
            raise DownloadError(
                f"cannot write {part} ({err.strerror}): free space in, or choose "
                f"another, DATA_DIR ({part.parent})"
            ) from err
        raise
    return True


@dataclass
class _Transfer:
    """One download over its attempts: ``size`` the published size, ``total`` the expected."""

    url: str
    part: Path
    size: int | None
    timeout: float
    progress: bool
    total: int | None = None
    problem: str = "it was never tried"
    failures: int = 0

    def attempt(self) -> bool:
        """Fetch what the ``.part`` lacks; True once it holds all the server sends."""
        start = self.part.stat().st_size if self.part.exists() else 0
        response = _request(self.url, start, self.timeout)
        if response is None:  # asked past the end: the .part is suspicious
            _quarantine(self.part, "server refused to resume it")
            self.problem = "the server refused to resume"
            return False
        with response:
            start = self._place(response, start)
            if start is None:
                return False
            limit = self.total if self.total is not None else MAX_UNKNOWN_BYTES
            try:
                fits = _append(
                    response, self.part, start, self.total, limit, progress=self.progress
                )
            except (http.client.IncompleteRead, OSError) as err:
                timed_out = isinstance(err, TimeoutError)
                self._failed(
                    f"timed out: no byte for {self.timeout:g} s" if timed_out else str(err)
                )
                return False
        if not fits:
            self.part.unlink(missing_ok=True)  # nothing a later run could take for finished
            raise DownloadError(self._too_much(limit))
        got = self.part.stat().st_size
        if self.total is None or got >= self.total:
            return True
        self._failed(f"the connection ended after {got:,} of {self.total:,} bytes")
        return False

    def _place(self, response, start: int) -> int | None:
        """Where the response goes in the ``.part`` (``start`` or 0), or None (the ``.part``
        removed) for a 206 from elsewhere; sets ``total``."""
        offset, announced = _placement(response)
        if offset not in (0, start):  # not what was asked: never appended
            sent = "no readable Content-Range" if offset is None else f"bytes from {offset:,}"
            self.problem = f"asked for bytes from {start:,}, the server sent {sent}"
            log.warning("%s; starting %s afresh", self.problem, self.part.name)
            self.part.unlink(missing_ok=True)
            return None
        if start and offset == 0:
            log.info("the server sent the whole file: restarting %s from 0", self.part.name)
        if self.size is not None and announced not in (None, self.size):
            raise DownloadError(
                f"DATASET_URL {self.url} announces {announced:,} bytes, but the archive it "
                f"names is published as {self.size:,}: the file there has changed or is not "
                f"the archive; check the address, {_OTHER_WAYS}"
            )
        if self.size is not None or announced is not None:
            self.total = self.size if self.size is not None else announced
        return offset

    def _failed(self, problem: str) -> None:
        """Note a failed read and wait before the next try."""
        self.failures += 1
        self.problem = problem
        log.warning("%s; resuming", problem)
        time.sleep(min(RETRY_WAIT * self.failures, 10.0))

    def _too_much(self, limit: int) -> str:
        if self.size is not None:
            why = "the archive's published size"
        elif self.total is not None:
            why = "the size the server announced"
        else:
            why = "MAX_UNKNOWN_BYTES, the cap for a download that states no size"
        return (
            f"DATASET_URL {self.url} sent more than {limit:,} bytes ({why}): stopped there "
            f"and removed the partial download; check the address, {_OTHER_WAYS}"
        )


def _verify(part: Path, url: str, total: int | None, sha256: str) -> None:
    """Check the size and sha256; a mismatch is moved aside and raised."""
    size = part.stat().st_size
    if total is not None and size != total:
        why = f"is {size:,} bytes, not the {total:,} expected"
    elif sha256 and (actual := sha256_of(part)) != sha256.lower():
        why = f"has sha256 {actual}, not the expected {sha256.lower()}"
    else:
        return
    bad = _quarantine(part, why)
    raise DownloadError(
        f"DATASET_URL {url}: the download {why}; moved it aside to {bad} (the one bad copy "
        "kept): run again to download it afresh, and if that fails too, the file there is not "
        f"the one expected: check the address and DATASET_SHA256, {_OTHER_WAYS}"
    )


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str = "",
    size: int | None = None,
    timeout: float | None = None,
    retries: int = 5,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` unless it exists, resuming ``<dest>.part`` up to ``retries``
    times; a wrong size or sha256 is moved aside and raises :class:`DownloadError`."""
    dest = Path(dest)
    if dest.is_file():
        log.info("%s already downloaded, skipping", dest.name)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    timeout = READ_TIMEOUT if timeout is None else timeout
    transfer = _Transfer(url, part, size, timeout, progress, total=size)
    for _ in range(retries + 1):
        if transfer.attempt():
            _verify(part, url, transfer.total, sha256)
            replace_durably(part, dest)  # on the disk before it is called downloaded
            log.info("downloaded %s (%.1f MB)", dest.name, dest.stat().st_size / 1e6)
            return dest
    got = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"DATASET_URL {url}: the download failed {retries + 1} times (the last: "
        f"{transfer.problem}); run again to resume from {got:,} bytes, {_OTHER_WAYS}"
    )


def _shown(name: str) -> str:
    """An entry's name, shortened when very long."""
    return name if len(name) <= 100 else f"{name[:60]}...{name[-30:]}"


def _check_member(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's path or kind must not be extracted, or None."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "path leaves the target folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if info.flag_bits & 0x1:
        return "it is encrypted, which the data set never is: zip the photos without a password"
    longest = max((len(part.encode()) for part in PurePosixPath(name).parts), default=0)
    if longest > MAX_NAME_BYTES:
        return (
            f"a part of its name is {longest} bytes long, over the {MAX_NAME_BYTES} a file name "
            "may have: shorten it in the zip"
        )
    return None


def _expansion(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's declared expansion is an archive bomb's, or None."""
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > MAX_RATIO_FROM_BYTES and ratio > MAX_EXPANSION_RATIO:
        return (
            f"it declares {info.compress_size:,} bytes that expand to {info.file_size:,} "
            f"({ratio:,.0f}:1; photos barely compress, so anything over "
            f"{MAX_EXPANSION_RATIO}:1 is taken for an archive bomb)"
        )
    return None


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_archive(
    archive: Path, members: list[zipfile.ZipInfo], *, max_files: int, max_bytes: int, free: int
) -> None:
    """Raise :class:`UnsafeArchiveError` for the first reason not to extract ``archive``."""
    for info in members:
        if why := _check_member(info):
            name = _shown(info.filename)
            raise UnsafeArchiveError(f"{archive.name}: refusing entry {name!r}: {why}")
    if len(members) > max_files:
        raise UnsafeArchiveError(
            f"{archive.name} holds {len(members)} entries, over the cap of {max_files}"
        )
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive.name} would unpack to {total / 1e9:.1f} GB, over the cap of "
            f"{max_bytes / 1e9:.1f} GB"
        )
    for info in members:
        if why := _expansion(info):
            raise UnsafeArchiveError(f"{archive.name}: refusing entry {info.filename!r}: {why}")
    if total > free:
        raise UnsafeArchiveError(
            f"{archive.name} would unpack to {_size(total)}, but only {_size(free)} is free "
            "there: free some space, or set DATA_DIR (CATSDOGS_DATA_DIR) to another disk"
        )


def _advice(archive: Path, downloaded: bool) -> str:
    """What to do about a bad archive (delete it only if the series downloaded it)."""
    if downloaded:
        return (
            f"delete {archive} and run again to download it afresh; if that fails too, check "
            "that DATASET_URL serves a zip of the photos"
        )
    return (
        "the series did not download it, so it is left as it is: set DATASET_URL to a zip of "
        "the photos"
    )


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path, advice: str) -> None:
    """Write one entry under ``staging``, refusing content other than its header declares."""
    dest = staging.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zf.open(info) as source, open(dest, "wb") as out:
            while chunk := source.read(min(1 << 20, info.file_size - written + 1)):
                written += len(chunk)
                if written > info.file_size:
                    break
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        problem = f"its content does not match ({str(err) or type(err).__name__})"
    else:
        if written == info.file_size:
            return
        problem = "it holds more" if written > info.file_size else f"it holds {written:,}"
    raise UnsafeArchiveError(
        f"{os.path.basename(zf.filename or '')}: refusing entry {info.filename!r}: its header "
        f"declares {info.file_size:,} bytes but {problem}; the archive is damaged or forged: "
        f"{advice}"
    )


@contextmanager
def _staged(archive: Path, target: Path) -> Iterator[Path]:
    """A new folder in ``target`` to extract into, flushed and moved into place at the end."""
    prefix = f".extracting-{archive.stem}"
    for stale in target.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=target))
    try:
        yield staging
        if hasattr(os, "sync"):  # one call for every extracted file, before they count as there
            os.sync()
        for entry in staging.iterdir():
            if (target / entry.name).exists():
                log.info("%s already exists, keeping it", target / entry.name)
            else:
                entry.rename(target / entry.name)
        fsync_folder(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_zip(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    max_files: int = MAX_ARCHIVE_FILES,
    max_bytes: int = MAX_ARCHIVE_BYTES,
    progress: bool = True,
    downloaded: bool = False,
) -> Path:
    """Extract ``archive`` into ``target``, all or nothing, after :func:`check_archive`;
    ``downloaded``: an error may advise deleting it."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    advice = _advice(archive, downloaded)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{archive} is not a readable zip archive ({err}): {advice}") from err
    with zf:
        members = zf.infolist()
        free = shutil.disk_usage(target).free
        check_archive(archive, members, max_files=max_files, max_bytes=max_bytes, free=free)
        entries = progress_bar(members, desc=f"extracting {archive.name}", disable=not progress)
        with _staged(archive, target) as staging:
            for info in entries:
                try:
                    _extract_entry(zf, info, staging, advice)
                except OSError as err:
                    if err.errno != errno.ENAMETOOLONG:
                        raise
                    raise UnsafeArchiveError(
                        f"{archive.name}: refusing entry {_shown(info.filename)!r}: its path is "
                        f"too long for this file system ({err.strerror}): {advice}"
                    ) from None
    return target


def prepare_dataset(
    data_dir: str | os.PathLike[str],
    url: str,
    *,
    sha256: str = "",
    progress: bool = True,
    layout: Layout = FOLDERS,
) -> Path:
    """The image folder in ``data_dir``, downloaded from ``url`` (``http(s)://``, ``file://``
    or a local zip) and extracted when missing, by one process at a time."""
    data_dir = Path(data_dir)
    found = find_image_root(data_dir, layout)
    if found is not None:
        log.info("found %s, nothing to download", found)
        return found
    with _download_lock(data_dir):
        found = find_image_root(data_dir, layout)  # made by the first process to lock?
        if found is not None:
            log.info("found %s, made by another process meanwhile", found)
            return found
        check_no_loose_photos(data_dir, layout)  # the user's own photos, another layout
        if layout.source != "folders" and url == DEFAULT_DATASET_URL:
            raise DownloadError(  # the user's photos are missing, not Microsoft's
                f"found no photos in {data_dir} as LABELS={layout.source!r} says "
                f"({describe(layout)}), and Microsoft's archive (the default DATASET_URL) "
                "holds class folders: put your photos in DATA_DIR, or set DATASET_URL to a zip "
                "of them."
            )
        archive, downloaded = _fetch_archive(data_dir, url, sha256=sha256, progress=progress)
        extract_zip(archive, data_dir, progress=progress, downloaded=downloaded)
    found = find_image_root(data_dir, layout)
    if found is None:
        raise DownloadError(
            f"{archive.name} did not hold the photos as LABELS says: {describe(layout)}"
        )
    return found


@contextmanager
def _download_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir``'s download lock and remove its empty file before release, so none is
    left behind (a waiter then makes its own; a soft lock's marker is left to filelock)."""
    lock = data_dir / ".download.lock"
    with held(lock, "downloading and extracting the data set"):
        try:
            yield
        finally:
            with suppress(OSError):  # gone already; or Windows, where filelock removes it
                if lock.stat().st_size == 0:
                    lock.unlink()


def _fetch_archive(data_dir: Path, url: str, *, sha256: str, progress: bool) -> tuple[Path, bool]:
    """The local zip ``url`` names, or the one downloaded into ``data_dir``; and whether it
    was downloaded."""
    if url.startswith("file://"):
        url = urllib.request.url2pathname(url[len("file://") :])
    if "://" not in url:
        archive = Path(url).expanduser()
        if not archive.is_file():
            raise DownloadError(f"DATASET_URL points at {archive}, which is not a file")
        if sha256 and sha256_of(archive) != sha256.lower():
            raise DownloadError(f"{archive}: sha256 differs from DATASET_SHA256={sha256}")
        return archive, False
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "dataset.zip"
    size = None
    if url == DEFAULT_DATASET_URL:
        size, sha256 = DEFAULT_ARCHIVE_SIZE, sha256 or DEFAULT_ARCHIVE_SHA256
    archive = download(url, data_dir / name, sha256=sha256, size=size, progress=progress)
    return archive, True
