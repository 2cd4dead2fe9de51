"""Downloading and extracting the data set: resumable, verified, and safe to extract.

- A download goes to ``<name>.part`` and is renamed only once its size (and sha256, when
  known) checks out, so a half-written file is never mistaken for a finished one.
- A cut connection resumes from where it stopped (HTTP ``Range``); a server that ignores
  ranges restarts cleanly.
- Extraction refuses entries that would land outside the target folder, links, archives
  whose size or file count is beyond a sane cap, entries that expand far more than photos
  can (an archive bomb) and archives that would not fit on the disk, all before writing
  anything; an entry holding more than its header declares is caught while it is written.
  It is all-or-nothing.
- Download and extraction happen once per data folder: other processes preparing the same
  folder at the same time wait for the first and reuse what it made.
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
from pathlib import Path, PurePosixPath

from .config import DEFAULT_DATASET_URL, Layout
from .files import fsync_folder, replace_durably
from .layouts import FOLDERS, IMAGE_ROOT_NAME, describe, find_image_root
from .layouts import class_folders as class_folders  # was here: still importable from here
from .locks import held
from .progress import progress_bar

log = logging.getLogger(__name__)

MAX_ARCHIVE_FILES = 200_000
MAX_ARCHIVE_BYTES = 8 * 1024**3  # the real archive unpacks to about 0.8 GB
#: JPEGs barely compress (the real archive is close to 1:1), so an entry that expands more
#: than this is no photo: it is refused, when it declares more than MAX_RATIO_FROM_BYTES.
MAX_EXPANSION_RATIO = 100
MAX_RATIO_FROM_BYTES = 1024**2
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}
_USER_AGENT = "catsdogs-helpers (+https://pypi.org/project/catsdogs-helpers)"


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


_OTHER_WAYS = (
    "or set DATASET_URL (CATSDOGS_DATASET_URL) to the path of a .zip you already have, or put "
    f"an extracted {IMAGE_ROOT_NAME}/ folder inside DATA_DIR (CATSDOGS_DATA_DIR)."
)


def _offline_message(url: str, reason: object) -> str:
    """One line for a connection that could not be made: what failed and what to do."""
    return f"Could not download DATASET_URL {url} ({reason}). Check your connection, {_OTHER_WAYS}"


def _http_message(url: str, code: int, reason: object) -> str:
    """One line for an HTTP error status (4xx/5xx): the URL, the status and what to do."""
    return f"DATASET_URL {url} answered HTTP {code} {reason}. Check the address, {_OTHER_WAYS}"


def _quarantine(path: Path, why: str) -> Path:
    """Move a file that failed verification aside (never delete data) and return where."""
    bad = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(bad)
    log.warning("%s: %s; moved aside to %s", path.name, why, bad.name)
    return bad


def _request(url: str, start: int, timeout: float):
    """The response for ``url`` from byte ``start`` on; None when the server refuses that
    range (HTTP 416). Other HTTP and connection errors are one-line :class:`DownloadError`s
    (raised from None: the urllib traceback underneath says nothing the message does not)."""
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            return None
        raise DownloadError(_http_message(url, err.code, err.reason)) from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(_offline_message(url, getattr(err, "reason", err))) from None


def _sizes(response, start: int, name: str) -> tuple[int, int | None]:
    """Where the response's bytes start (0 when the server ignored the range) and the whole
    file's size when the server tells it."""
    if start and response.status == 200:
        log.info("server ignores ranges: restarting %s from the beginning", name)
        start = 0
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        return start, int(content_range.rsplit("/", 1)[-1]) if "/" in content_range else None
    length = response.headers.get("Content-Length")
    return start, int(length) if length is not None else None


def _append(response, part: Path, start: int, total: int | None, *, progress: bool) -> None:
    """Write the response's bytes into ``part`` from byte ``start`` on, with a byte bar. A
    full or read-only disk is a :class:`DownloadError` naming the folder."""
    bar = progress_bar(total=total, initial=start, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=part.name.removesuffix(".part"),
                       disable=not progress)  # fmt: skip
    try:
        with open(part, "ab" if start else "wb") as out, bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
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
        _quarantine(part, f"size {size} differs from the expected {total}")
        raise DownloadError(f"{url}: size {size} differs from the expected {total}")
    if sha256:
        actual = sha256_of(part)
        if actual != sha256.lower():
            _quarantine(part, f"sha256 {actual} differs from the expected {sha256}")
            raise DownloadError(f"{url}: sha256 {actual} differs from the expected {sha256}")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str = "",
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` with a byte progress bar, resuming where it stopped.

    Returns ``dest`` at once when it already exists (it only ever appears verified). A cut
    connection resumes from the bytes in ``<dest>.part`` (up to ``retries`` times here, and
    on the next call). A file whose size or sha256 does not match is moved aside with a
    ``.bad-<time>`` suffix and a :class:`DownloadError` is raised.
    """
    dest = Path(dest)
    if dest.is_file():
        log.info("%s already downloaded, skipping", dest.name)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total, failures = None, 0
    while failures <= retries:
        start = part.stat().st_size if part.exists() else 0
        response = _request(url, start, timeout)
        if response is None:  # asked past the end: the .part is suspicious
            _quarantine(part, "server refused to resume it")
            failures += 1
            continue
        with response:
            start, reported = _sizes(response, start, dest.name)
            total = reported if reported is not None else total
            try:
                _append(response, part, start, total, progress=progress)
            except (http.client.IncompleteRead, OSError) as err:
                failures += 1
                log.warning("connection dropped (%s); resuming", err)
                time.sleep(min(2.0 * failures, 10.0))
                continue
        size = part.stat().st_size
        if total is None or size >= total:
            _verify(part, url, total, sha256)
            replace_durably(part, dest)  # on the disk before it is called downloaded
            log.info("downloaded %s (%.1f MB)", dest.name, dest.stat().st_size / 1e6)
            return dest
        failures += 1
        log.warning("got %d of %d bytes; resuming", size, total)
    got = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"DATASET_URL {url}: the connection kept dropping or the server refused to resume; "
        f"run again to resume from {got} bytes"
    )


def _check_member(info: zipfile.ZipInfo) -> str | None:
    """Why an archive entry must not be extracted, or None when it is fine."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "path leaves the target folder"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return None


def _expansion(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's declared expansion is no photo's (an archive bomb), or None."""
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > MAX_RATIO_FROM_BYTES and ratio > MAX_EXPANSION_RATIO:
        return (
            f"it declares {info.compress_size:,} bytes that expand to {info.file_size:,} "
            f"({ratio:,.0f}:1; photos barely compress, so anything over "
            f"{MAX_EXPANSION_RATIO}:1 is taken for an archive bomb)"
        )
    return None


def check_archive(
    archive: Path, members: list[zipfile.ZipInfo], *, max_files: int, max_bytes: int, free: int
) -> None:
    """Raise :class:`UnsafeArchiveError` for the first reason not to extract ``archive``
    (an entry's path, the count, the declared total, an entry's expansion, ``free`` bytes on
    the disk), from its headers alone."""
    for info in members:
        why = _check_member(info)
        if why:
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
        why = _expansion(info)
        if why:
            raise UnsafeArchiveError(f"{archive.name}: refusing entry {info.filename!r}: {why}")
    if total > free:
        raise UnsafeArchiveError(
            f"{archive.name} would unpack to {_size(total)}, but only {_size(free)} is free "
            "there: free some space, or set DATA_DIR (CATSDOGS_DATA_DIR) to another disk"
        )


def _size(n: int) -> str:
    """A byte count as people read it: MB below a gigabyte, GB above."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path) -> None:
    """Write one (checked) entry under ``staging``, never more bytes than its header declares;
    an entry whose content does not match its header raises :class:`UnsafeArchiveError`."""
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
        f"refusing entry {info.filename!r}: its header declares {info.file_size:,} bytes but "
        f"{problem}; the archive is damaged or forged: delete it and download it again"
    )


def _staging_folder(archive: Path, target: Path) -> Path:
    """A new, empty folder inside ``target`` to extract into, after removing any left by an
    extraction that was killed (callers that may run at once hold the data folder's lock)."""
    prefix = f".extracting-{archive.stem}"
    for stale in target.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=target))


def extract_zip(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    max_files: int = MAX_ARCHIVE_FILES,
    max_bytes: int = MAX_ARCHIVE_BYTES,
    progress: bool = True,
) -> Path:
    """Extract ``archive`` into ``target``, all or nothing.

    Every entry is checked (:func:`check_archive`) before anything is written; extraction
    happens in a temporary folder inside ``target`` that is flushed to the disk and moved
    into place only when complete. Raises :class:`UnsafeArchiveError` on a dangerous entry,
    an archive beyond the caps or the free space, or an entry that holds other than what
    its header declares.
    """
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
        staging = _staging_folder(archive, target)
        try:
            for info in progress_bar(
                members, desc=f"extracting {archive.name}", disable=not progress
            ):
                _extract_entry(zf, info, staging)
        except UnsafeArchiveError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise UnsafeArchiveError(f"{archive.name}: {err}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _move_into_place(staging, target)
    return target


def _move_into_place(staging: Path, target: Path) -> None:
    """Flush the extracted files to the disk, then move them from ``staging`` into
    ``target`` (keeping what is already there) and remove ``staging``."""
    if hasattr(os, "sync"):  # one call for every extracted file, before they count as there
        os.sync()
    for entry in staging.iterdir():
        final = target / entry.name
        if final.exists():
            log.info("%s already exists, keeping it", final)
            continue
        entry.rename(final)
    fsync_folder(target)
    shutil.rmtree(staging, ignore_errors=True)


def prepare_dataset(
    data_dir: str | os.PathLike[str],
    url: str,
    *,
    sha256: str = "",
    progress: bool = True,
    layout: Layout = FOLDERS,
) -> Path:
    """Make sure ``data_dir`` holds an extracted image folder and return it.

    Nothing is downloaded when ``data_dir`` already holds the photos as ``layout`` says
    (:func:`layouts.find_image_root`: in ``PetImages/``, in the one folder there, or in
    ``data_dir`` itself). ``url`` may be an ``http(s)://`` address, a ``file://`` address or
    a local path to a zip file. Processes preparing the same ``data_dir`` at once take turns
    (a lock file, ``.download.lock``): the first downloads and extracts, the others wait and
    then find its result.
    """
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
        _check_archive_fits(data_dir, url, layout)
        archive = _fetch_archive(data_dir, url, sha256=sha256, progress=progress)
        extract_zip(archive, data_dir, progress=progress)
    found = find_image_root(data_dir, layout)
    if found is None:
        raise DownloadError(
            f"{archive.name} did not hold the photos as LABELS says: {describe(layout)}"
        )
    return found


def _check_archive_fits(data_dir: Path, url: str, layout: Layout) -> None:
    """Raise :class:`DownloadError` rather than download Microsoft's archive (class folders)
    for photos labelled another way: the user's photos are missing, not Microsoft's."""
    if layout.source != "folders" and url == DEFAULT_DATASET_URL:
        raise DownloadError(
            f"found no photos in {data_dir} as LABELS={layout.source!r} says "
            f"({describe(layout)}), and Microsoft's archive (the default DATASET_URL) holds "
            "class folders: put your photos in DATA_DIR, or set DATASET_URL to a zip of them."
        )


def _fetch_archive(data_dir: Path, url: str, *, sha256: str, progress: bool) -> Path:
    """The archive ``url`` names: a local zip (checked against ``sha256`` when given), or
    downloaded into ``data_dir``."""
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
