"""Running a function over a long list of files on all cores, with one progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .config import available_cores
from .progress import progress_bar

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
