"""Plumbing the lessons need but need not read: atomic, durable file writes; CSV files that
give back any file name; file locks that never block a killed run's successor; progress bars
(``CATSDOGS_PROGRESS``); a parallel map in chunks over processes."""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout
from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

from .config import available_cores

#: Random bytes in a temporary sibling's name (twice as many hexadecimal digits).
TOKEN_BYTES = 6


def unique_sibling(path: Path, suffix: str) -> Path:
    """Create (``O_EXCL``, mode ``0o666`` less the umask) and return a new, empty file beside
    ``path`` named ``<name>.<random><suffix>``."""
    for _ in range(100):
        candidate = path.with_name(f"{path.name}.{secrets.token_hex(TOKEN_BYTES)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def stale_siblings(path: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """The files beside ``path`` named as :func:`unique_sibling` names them (a killed write's)."""
    path = Path(path)
    name = re.compile(rf"{re.escape(path.name)}\.[0-9a-f]{{{2 * TOKEN_BYTES}}}{re.escape(suffix)}")
    if not path.parent.is_dir():
        return []
    found = path.parent.glob(f"{glob.escape(path.name)}.*{glob.escape(suffix)}")
    return sorted(p for p in found if name.fullmatch(p.name) and p.is_file())


def remove_stale_temporaries(path: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """Remove and return :func:`stale_siblings` of ``path``; only for a file no one is writing."""
    stale = stale_siblings(path, suffix)
    for sibling in stale:
        sibling.unlink(missing_ok=True)
    return stale


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to the disk; a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, target: Path) -> None:
    """Flush ``source`` (closed) to the disk, rename it to ``target``, then flush the folder."""
    fd = os.open(source, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    source.replace(target)
    fsync_folder(target.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path of its own beside ``path``, flushed and renamed to ``path`` when the
    block succeeds, removed on error (an ``OSError`` re-raised naming the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        tmp = unique_sibling(path, ".tmp")
        yield tmp
        replace_durably(tmp, path)
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path} ({err.strerror or err})") from err
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


# Any path survives a CSV round trip: "\r\n" line ends make the writer quote a field with a
# line break, and "surrogateescape" keeps the bytes of a name that is not UTF-8.

CSV_ENCODING = "utf-8"
CSV_ERRORS = "surrogateescape"
CSV_LINE_END = "\r\n"


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` (without its index) as the text :func:`write_csv` writes."""
    return frame.to_csv(index=False, lineterminator=CSV_LINE_END)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically, in UTF-8 (undecodable bytes kept), no line end translated."""
    with (
        atomic_path(path) as tmp,
        open(tmp, "w", encoding=CSV_ENCODING, errors=CSV_ERRORS, newline="") as file,
    ):
        file.write(text)
    return Path(path)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` (without its index) as a CSV that :func:`read_csv` gives back."""
    return write_text(path, csv_text(frame))


def read_csv(path: str | os.PathLike[str], **options: Any) -> pd.DataFrame:
    """Read a CSV, every column as text and nothing as missing unless ``options`` say otherwise;
    a byte-order mark is skipped."""
    options = {"dtype": str, "keep_default_na": False, **options}
    return pd.read_csv(path, encoding="utf-8-sig", encoding_errors=CSV_ERRORS, **options)


log = logging.getLogger(__name__)


@contextmanager
def held(lock_file: str | os.PathLike[str], what: str, *, wait: bool = True) -> Iterator[None]:
    """Hold ``lock_file`` while the block does ``what``, waiting for another holder (or with
    ``wait=False`` raising :class:`filelock.Timeout`); released when the process dies."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise
        log.info("another process is %s (it holds %s): waiting for it", what, lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


ENV_VAR = "CATSDOGS_PROGRESS"
MODES = ("auto", "text", "off")
#: Seconds between redraws of a text bar (a notebook keeps every redraw).
TEXT_MININTERVAL = 1.0


def progress_mode() -> str:
    """The kind of bar ``CATSDOGS_PROGRESS`` asks for: ``auto``, ``text`` or ``off``."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}: use one of {', '.join(MODES)}")
    return mode


def progress_bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> text_tqdm:
    """A tqdm bar of the kind ``CATSDOGS_PROGRESS`` asks for; takes tqdm's own arguments."""
    mode = progress_mode()
    if mode == "off":
        tqdm_kwargs["disable"] = True
    if mode == "text":
        tqdm_kwargs.setdefault("file", sys.stdout)
        tqdm_kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        tqdm_kwargs.setdefault("ncols", 100)
        return text_tqdm(iterable, **tqdm_kwargs)
    return auto_tqdm(iterable, **tqdm_kwargs)


#: Files per task: sending it costs little, and the progress bar still moves.
CHUNK = 64


def map_chunks(
    func: Callable[..., Any],
    items: list,
    *args: Any,
    workers: int | None = None,
    desc: str = "",
    progress: bool = True,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(start, func(items[start:start + CHUNK], *args))`` per chunk, in order, over
    ``workers`` processes (here for one worker or few items); ``func`` must be importable."""
    workers = workers if workers is not None else available_cores()
    starts = list(range(0, len(items), CHUNK))
    chunks = [items[s : s + CHUNK] for s in starts]
    bar = progress_bar(total=len(items), desc=desc, unit="img", disable=not progress)
    try:
        if workers <= 1 or len(items) <= 2 * CHUNK:
            results: Iterator = (func(chunk, *args) for chunk in chunks)
            for start, chunk, result in zip(starts, chunks, results, strict=True):
                bar.update(len(chunk))
                yield start, result
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(func, chunks, *([arg] * len(chunks) for arg in args))
                for start, chunk, result in zip(starts, chunks, results, strict=True):
                    bar.update(len(chunk))
                    yield start, result
    finally:
        bar.close()
