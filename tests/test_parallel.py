"""One function over many items, in worker processes or here, with the same results."""

from __future__ import annotations

from catsdogs_helpers import plumbing


def _scaled(chunk: list[int], factor: int) -> list[int]:
    return [x * factor for x in chunk]


def test_processes_and_this_process_give_the_same_chunks_in_order():
    items = list(range(3 * plumbing.CHUNK + 5))  # enough items to start worker processes
    serial = list(plumbing.map_chunks(_scaled, items, 3, workers=1, progress=False))
    pooled = list(plumbing.map_chunks(_scaled, items, 3, workers=2, progress=False))
    assert serial == pooled
    assert [start for start, _ in pooled] == [0, 64, 128, 192]
    assert [x for _, chunk in pooled for x in chunk] == [3 * x for x in items]
