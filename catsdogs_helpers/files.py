"""Writing files so that a crash, a kill, a power cut or a full disk never leaves a
half-written one, even when several processes write the same file at once.

Every write goes to a temporary file of its own beside the target (a unique name, so two
writers never share it), which is flushed to the disk (``fsync``) and then renamed over the
target; the folder is flushed too, so that the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
