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

# ------------------------------------------------------------------------------- files
# Every write goes to a temporary file of its own beside the target, is flushed to the disk
# and renamed over it, and the folder is flushed too: a crash, a kill, a power cut or a full
# disk never leaves a half-written file, even with several writers at once.


#: Random bytes in a temporary sibling's name (twice as many hexadecimal digits).
TOKEN_BYTES = 6


def unique_sibling(path: Path, suffix: str) -> Path:
    """Create and return a new, empty file beside ``path`` named ``<name>.<random><suffix>``.

    The name is claimed with ``O_EXCL``, so no other writer can have it; the file gets the
    usual permissions (``0o666`` less the umask), like the file it will replace.
    """
    for _ in range(100):
        candidate = path.with_name(f"{path.name}.{secrets.token_hex(TOKEN_BYTES)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def stale_siblings(path: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """The files beside ``path`` that :func:`unique_sibling` names for it (``<name>.<12
    hexadecimal digits><suffix>``), as a write killed half-way leaves them; nothing else."""
    path = Path(path)
    name = re.compile(rf"{re.escape(path.name)}\.[0-9a-f]{{{2 * TOKEN_BYTES}}}{re.escape(suffix)}")
    if not path.parent.is_dir():
        return []
    found = path.parent.glob(f"{glob.escape(path.name)}.*{glob.escape(suffix)}")
    return sorted(p for p in found if name.fullmatch(p.name) and p.is_file())


def remove_stale_temporaries(path: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """Remove :func:`stale_siblings` of ``path``; returns them. Only for a file no one is
    writing now (e.g. in a folder held with :func:`held`): a write under way loses its file."""
    stale = stale_siblings(path, suffix)
    for sibling in stale:
        sibling.unlink(missing_ok=True)
    return stale


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written (and closed) file's content to the disk."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot
    be opened (Windows, where a rename is flushed with the file)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, target: Path) -> None:
    """Flush ``source`` to the disk, rename it to ``target``, then flush the folder."""
    fsync_file(source)
    source.replace(target)
    fsync_folder(target.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without error it is
    flushed to the disk and renamed to ``path`` (and the folder flushed), so ``path`` is
    always either the old file or the whole new one, even after a power cut.

    Each call gets its own temporary name, so processes writing the same file at once never
    disturb each other (the last rename wins, and each version is whole). On any error the
    temporary file is removed; an ``OSError`` (disk full, read-only folder) is re-raised
    naming the file. The block must close what it opened on the path before it ends.
    Usage: ``with atomic_path(p) as tmp: frame.to_csv(tmp)``.
    """
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


# --------------------------------------------------------------------------------- CSV
# Every CSV the package writes (the manifest, a split, predictions) is written by write_csv
# and read back by read_csv, so that any path a file system can hold survives the round
# trip: a field holding a line break or a carriage return is quoted (the writer quotes what
# holds a character of its line end, which is RFC 4180's "\r\n"), and a name that is not
# UTF-8 keeps its bytes (Python holds the undecodable ones as lone surrogates, written back
# as the bytes they came from: "surrogateescape").

CSV_ENCODING = "utf-8"
CSV_ERRORS = "surrogateescape"
CSV_LINE_END = "\r\n"


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` (without its index) as the text :func:`write_csv` writes."""
    return frame.to_csv(index=False, lineterminator=CSV_LINE_END)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (:func:`atomic_path`), in UTF-8, any undecodable bytes of a
    file name as they were, and no line end translated."""
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
    """Read a CSV written by :func:`write_csv` (or by hand): every column as text, nothing
    read as missing, unless ``options`` (``pandas.read_csv``'s) say otherwise. A byte-order
    mark (Excel's) is skipped."""
    options = {"dtype": str, "keep_default_na": False, **options}
    return pd.read_csv(path, encoding="utf-8-sig", encoding_errors=CSV_ERRORS, **options)


# ------------------------------------------------------------------------------- locks
# Work done once per data or run folder (download, manifest, cache, training) is done under
# a lock file beside its result: the first process does it, the others wait and reuse it.
# filelock's locks are released by the operating system when a process dies.

log = logging.getLogger(__name__)


@contextmanager
def held(lock_file: str | os.PathLike[str], what: str, *, wait: bool = True) -> Iterator[None]:
    """Hold the lock ``lock_file`` while the block does ``what`` (e.g. "building the cache").

    When another process holds it, wait for it (saying so once, in the log), or with
    ``wait=False`` raise :class:`filelock.Timeout` at once.
    """
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


# ---------------------------------------------------------------------------- progress
# ``CATSDOGS_PROGRESS``: ``auto`` (tqdm.auto: a widget in Jupyter, text in a terminal),
# ``text`` (plain text, redrawn at most once a second: what a notebook executed unattended
# saves in its final state; the series runner and the tests set it) or ``off``.

ENV_VAR = "CATSDOGS_PROGRESS"
MODES = ("auto", "text", "off")
#: Seconds between redraws of a text bar: every redraw is kept in the notebook until the cell
#: ends, so a 20-minute loop at tqdm's default of 0.1 s would pile up 12,000 of them.
TEXT_MININTERVAL = 1.0


def progress_mode() -> str:
    """The kind of bar ``CATSDOGS_PROGRESS`` asks for: ``auto``, ``text`` or ``off``."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}: use one of {', '.join(MODES)}")
    return mode


def progress_bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> text_tqdm:
    """A tqdm bar of the kind ``CATSDOGS_PROGRESS`` asks for; takes tqdm's own arguments.

    Use it as tqdm: ``for batch in progress_bar(loader, desc="epoch 1")`` or
    ``progress_bar(total=n, unit="B")`` with ``update``. ``disable=True`` still turns it off.
    """
    mode = progress_mode()
    if mode == "off":
        tqdm_kwargs["disable"] = True
    if mode == "text":
        tqdm_kwargs.setdefault("file", sys.stdout)
        tqdm_kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        tqdm_kwargs.setdefault("ncols", 100)
        return text_tqdm(iterable, **tqdm_kwargs)
    return auto_tqdm(iterable, **tqdm_kwargs)


# ---------------------------------------------------------------------------- parallel

#: Files per task: large enough that sending work to a process costs little, small enough
#: that the progress bar moves.
CHUNK = 64


def map_chunks(
    func: Callable[..., Any],
    items: list,
    *args: Any,
    workers: int | None = None,
    desc: str = "",
    progress: bool = True,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(start, func(items[start:start + CHUNK], *args))`` for each chunk, in order.

    The chunks run in ``workers`` processes (default: every core this process may use), or
    here when ``workers <= 1`` or there are too few items to pay for starting processes.
    ``func`` must be importable (a module-level function) for the worker processes.
    """
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
