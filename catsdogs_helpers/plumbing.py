"""Plumbing the lessons need but need not read: atomic, durable file writes; file locks
that never block a killed run's successor; progress bars (``CATSDOGS_PROGRESS``); a
parallel map in chunks over processes."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

from .config import available_cores

# ------------------------------------------------------------------------------- files
# Every write goes to a temporary file of its own beside the target, is flushed to the disk
# and renamed over it, and the folder is flushed too: a crash, a kill, a power cut or a full
# disk never leaves a half-written file, even with several writers at once.


def unique_sibling(path: Path, suffix: str) -> Path:
    """Create and return a new, empty file beside ``path`` named ``<name>.<random><suffix>``.

    The name is claimed with ``O_EXCL``, so no other writer can have it; the file gets the
    usual permissions (``0o666`` less the umask), like the file it will replace.
    """
    for _ in range(100):
        candidate = path.with_name(f"{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


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
