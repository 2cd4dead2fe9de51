"""Downloading and extracting the data set: resumable, verified, and safe to extract.

A download resumes a cut connection and is renamed from ``<name>.part`` only once verified.
Extraction is all or nothing, and refuses unsafe archives before writing anything.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
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
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from tqdm.utils import CallbackIOWrapper

from .config import DEFAULT_DATASET_URL, Layout
from .layouts import FOLDERS, IMAGE_ROOT_NAME, describe, find_image_root
from .layouts import class_folders as class_folders  # was here: still importable from here
from .plumbing import fsync_folder, held, progress_bar, replace_durably

log = logging.getLogger(__name__)

MAX_ARCHIVE_FILES = 200_000
MAX_ARCHIVE_BYTES = 8 * 1024**3  # the real archive unpacks to about 0.8 GB
#: JPEGs barely compress (the real archive is close to 1:1): an entry over MAX_RATIO_FROM_BYTES
#: that expands more than this is no photo but an archive bomb.
MAX_EXPANSION_RATIO = 100
MAX_RATIO_FROM_BYTES = 1024**2
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


def _quarantine(path: Path, why: str) -> None:
    """Move a file that failed verification aside (data is never deleted)."""
    bad = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(bad)
    log.warning("%s: %s; moved aside to %s", path.name, why, bad.name)


def _request(url: str, start: int, timeout: float):
    """The response for ``url`` from byte ``start`` on; None when the server refuses that
    range. Other errors raise one line, from None: urllib's traceback adds nothing to it."""
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


def _sizes(response, start: int, total: int | None, name: str) -> tuple[int, int | None]:
    """Where the response's bytes start (0 when the server ignored the range) and the size."""
    if start and response.status == 200:
        log.info("server ignores ranges: restarting %s from the beginning", name)
        start = 0
    if response.status == 206:
        size = response.headers.get("Content-Range", "").partition("/")[2]
    else:
        size = response.headers.get("Content-Length")
    return start, int(size) if size else total


def _append(response, part: Path, start: int, total: int | None, *, progress: bool) -> None:
    """Write the response's bytes into ``part`` from byte ``start`` on, with a byte bar."""
    in_bytes = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "disable": not progress}
    bar = progress_bar(total=total, initial=start, desc=part.name.removesuffix(".part"), **in_bytes)
    try:
        with open(part, "ab" if start else "wb") as out, bar:
            shutil.copyfileobj(response, CallbackIOWrapper(bar.update, out, "write"), 1 << 20)
    except OSError as err:
        if err.errno in _LOCAL_ERRNOS:
            raise DownloadError(
                f"cannot write {part} ({err.strerror}): free space in, or choose "
                f"another, DATA_DIR ({part.parent})"
            ) from err
        raise


def _verify(part: Path, url: str, total: int | None, sha256: str) -> None:
    """Check the finished file's size and sha256; a mismatch is moved aside and raised."""
    size = part.stat().st_size
    if total is not None and size != total:
        why = f"size {size} differs from the expected {total}"
    elif sha256 and (actual := sha256_of(part)) != sha256.lower():
        why = f"sha256 {actual} differs from the expected {sha256}"
    else:
        return
    _quarantine(part, why)
    raise DownloadError(f"{url}: {why}")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str = "",
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (unless it exists: it only ever appears verified), resuming
    from ``<dest>.part`` after a cut connection, here up to ``retries`` times and next call. A
    file whose size or sha256 does not match is moved aside (``.bad-<time>``) and raised."""
    dest = Path(dest)
    if dest.is_file():
        log.info("%s already downloaded, skipping", dest.name)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, total = dest.with_name(dest.name + ".part"), None
    for failures in range(1, retries + 2):
        start = part.stat().st_size if part.exists() else 0
        response = _request(url, start, timeout)
        if response is None:  # asked past the end: the .part is suspicious
            _quarantine(part, "server refused to resume it")
            continue
        with response:
            start, total = _sizes(response, start, total, dest.name)
            try:
                _append(response, part, start, total, progress=progress)
            except (http.client.IncompleteRead, OSError) as err:
                log.warning("connection dropped (%s); resuming", err)
                time.sleep(min(2.0 * failures, 10.0))
                continue
        if total is None or part.stat().st_size >= total:
            _verify(part, url, total, sha256)
            replace_durably(part, dest)  # on the disk before it is called downloaded
            log.info("downloaded %s (%.1f MB)", dest.name, dest.stat().st_size / 1e6)
            return dest
        log.warning("got %d of %d bytes; resuming", part.stat().st_size, total)
    got = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"DATASET_URL {url}: the connection kept dropping or the server refused to resume; "
        f"run again to resume from {got} bytes"
    )


def _check_member(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's path or kind must not be extracted, if it must not."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "path leaves the target folder"
    return "symbolic link" if stat.S_ISLNK(info.external_attr >> 16) else None


def _expansion(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's declared expansion is no photo's but an archive bomb's, if it is."""
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
    """Raise :class:`UnsafeArchiveError` for the first reason not to extract ``archive``, from
    its headers alone."""
    for info in members:
        if why := _check_member(info):
            raise UnsafeArchiveError(f"{archive.name}: refusing entry {info.filename!r}: {why}")
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


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path) -> None:
    """Write one checked entry under ``staging``, refusing content other than its header's."""
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
        "delete it and download it again"
    )


@contextmanager
def _staged(archive: Path, target: Path) -> Iterator[Path]:
    """A new folder inside ``target`` to extract into (callers that may run at once hold the
    data folder's lock), flushed to the disk and moved into place when the block ends."""
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
) -> Path:
    """Extract ``archive`` into ``target``, all or nothing, after :func:`check_archive`."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise DownloadError(
            f"{archive} is not a readable zip archive ({err}); delete it and download again"
        ) from err
    with zf:
        members = zf.infolist()
        free = shutil.disk_usage(target).free
        check_archive(archive, members, max_files=max_files, max_bytes=max_bytes, free=free)
        entries = progress_bar(members, desc=f"extracting {archive.name}", disable=not progress)
        with _staged(archive, target) as staging:
            for info in entries:
                _extract_entry(zf, info, staging)
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
    or a local zip) and extracted when it is not there, by one process at a time."""
    data_dir = Path(data_dir)
    found = find_image_root(data_dir, layout)
    if found is not None:
        log.info("found %s, nothing to download", found)
        return found
    with held(data_dir / ".download.lock", "downloading and extracting the data set"):
        found = find_image_root(data_dir, layout)  # made by the first process to lock?
        if found is not None:
            log.info("found %s, made by another process meanwhile", found)
            return found
        if layout.source != "folders" and url == DEFAULT_DATASET_URL:
            raise DownloadError(  # the user's photos are missing, not Microsoft's
                f"found no photos in {data_dir} as LABELS={layout.source!r} says "
                f"({describe(layout)}), and Microsoft's archive (the default DATASET_URL) "
                "holds class folders: put your photos in DATA_DIR, or set DATASET_URL to a zip "
                "of them."
            )
        archive = _fetch_archive(data_dir, url, sha256=sha256, progress=progress)
        extract_zip(archive, data_dir, progress=progress)
    found = find_image_root(data_dir, layout)
    if found is None:
        raise DownloadError(
            f"{archive.name} did not hold the photos as LABELS says: {describe(layout)}"
        )
    return found


def _fetch_archive(data_dir: Path, url: str, *, sha256: str, progress: bool) -> Path:
    """The local zip ``url`` names, or the one it downloads into ``data_dir``."""
    if url.startswith("file://"):
        url = urllib.request.url2pathname(url[len("file://") :])
    if "://" not in url:
        archive = Path(url).expanduser()
        if not archive.is_file():
            raise DownloadError(f"DATASET_URL points at {archive}, which is not a file")
        if sha256 and sha256_of(archive) != sha256.lower():
            raise DownloadError(f"{archive}: sha256 differs from DATASET_SHA256={sha256}")
        return archive
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "dataset.zip"
    return download(url, data_dir / name, sha256=sha256, progress=progress)
