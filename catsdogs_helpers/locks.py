"""Locks between processes that share a data folder or a run folder.

Several notebooks and series may use one ``DATA_DIR`` at once (a notebook open in Jupyter
while a papermill series runs, or two runs with different ``RUN_NAME``). The work that must
happen once per data folder (download and extraction, the manifest, each decoded cache) is
done under a lock file beside its result: the first process does it, the others wait and
then reuse what it made. The locks are :mod:`filelock`'s, which the operating system
releases when a process dies, so a killed run never leaves a lock behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

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
