"""Writing files so that a crash, a kill or a full disk never leaves a half-written one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends.

    On any error the temporary file is removed, so a re-run never finds (or trusts) a
    half-written file; an ``OSError`` (disk full, read-only folder) is re-raised naming the
    file. Usage: ``with atomic_path(p) as tmp: frame.to_csv(tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path} ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
