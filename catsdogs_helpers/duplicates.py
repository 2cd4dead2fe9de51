"""Duplicates: the same photo twice, byte for byte or re-encoded and resized.

Byte-identical copies have the same sha256. A copy saved again as JPEG, at another quality
or size, has different bytes, so it needs a fingerprint of what the photo *looks like*: the
**difference hash** (:func:`dhash`). Lay a grid of 16 rows by 17 columns over a grayscale
copy of the photo, take the mean brightness of each cell, and write down, for each of the
16 x 16 pairs of neighbouring cells in a row, whether the right one is brighter: 256 bits.
Re-encoding and resizing change single pixels but hardly the brightness of whole cells, so
a copy's hash lands a few bits away from the original's, and a different photo's dozens of
bits away. How far apart two hashes are is the number of bits in which they differ (the
Hamming distance).

The thresholds:

- :data:`NEAR_DUPLICATE_BITS` (12): hashes this close count as the same photo. The split
  keeps each group of such copies on one side (:func:`duplicate_groups`).
- :data:`LEAKAGE_REPORT_BITS` (24): a looser one for the leakage report, which lists
  similar photos that ended up in different splits, for a person to look at.
- :data:`DHASH_MIN_SIDE` (128): the validate step takes the hash from a grayscale decode
  whose shorter side is at least this. From coarser copies (a JPEG decoded at 1/8 scale),
  a copy of the photo resized to 75 % lands about 19 bits away instead of 3: past the
  threshold, so it would no longer count as the same photo.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from PIL import Image

#: Difference hashes (256 bits) this many bits apart or closer count as the same photo.
NEAR_DUPLICATE_BITS = 12
#: The leakage report's looser threshold: similar photos, not only copies, across splits.
LEAKAGE_REPORT_BITS = 24
#: The difference hash is taken from a grayscale copy whose shorter side is at least this
#: (1/2 scale for a 500x375 photo): coarser copies make resized duplicates drift apart.
DHASH_MIN_SIDE = 128


def dhash(image: Image.Image | np.ndarray, size: int = 16) -> str:
    """A 256-bit difference hash (hex): which of each pair of neighbouring cells of a
    ``size`` x ``size + 1`` grid laid over the grayscale image is brighter. The same photo
    re-encoded or resized lands a few bits away; different photos land dozens of bits away.

    ``image`` is a Pillow image or a 2-D uint8 grayscale array (such as
    :func:`images.jpeg_gray` returns); both give the same hash for the same pixels. Give it
    at least :data:`DHASH_MIN_SIDE` pixels on the shorter side.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L"))
    cells = _cell_means(image, size, size + 1)
    return np.packbits(cells[:, 1:] > cells[:, :-1]).tobytes().hex()


def _cell_means(gray: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean brightness of each cell of a ``rows`` x ``cols`` grid over ``gray``: exact box
    averages (pixels cut by a cell edge count in part), from the image's running sums."""
    h, w = gray.shape
    sums = cv2.integral(gray)  # (h + 1, w + 1): sums[y, x] = gray[:y, :x].sum()
    ys = np.linspace(0, h, rows + 1)
    y0 = np.minimum(ys.astype(np.intp), h - 1)
    fy = (ys - y0)[:, None]
    at_rows = sums[y0] * (1 - fy) + sums[y0 + 1] * fy
    xs = np.linspace(0, w, cols + 1)
    x0 = np.minimum(xs.astype(np.intp), w - 1)
    fx = xs - x0
    corners = at_rows[:, x0] * (1 - fx) + at_rows[:, x0 + 1] * fx
    return np.diff(np.diff(corners, axis=0), axis=1) / ((h / rows) * (w / cols))


def find_duplicates(manifest: pd.DataFrame, *, key: str = "sha256") -> pd.DataFrame:
    """Groups of valid files with the same ``key`` (``sha256``: byte-identical copies), with
    ``n_labels`` > 1 where one photo is filed under several classes. For the same photo
    re-encoded or resized, see :func:`near_duplicates`."""
    valid = manifest[manifest["ok"] & (manifest[key] != "")]
    dup = valid[valid.duplicated(key, keep=False)].copy()
    if dup.empty:
        return dup.assign(group=pd.Series(dtype=int), n_labels=pd.Series(dtype=int))
    dup["group"] = dup.groupby(key, sort=True).ngroup()
    dup["n_labels"] = dup.groupby(key)["label"].transform("nunique")
    return dup.sort_values(["group", "path"])[["group", "n_labels", "path", "label", key]]


def near_duplicate_pairs(
    hashes: list[str], max_distance: int = NEAR_DUPLICATE_BITS
) -> pd.DataFrame:
    """Pairs ``(i, j)``, ``i < j``, of difference hashes at most ``max_distance`` bits apart.

    Compares all pairs in blocks (seconds for 25,000 images). Empty hashes (files that were
    rejected) never match.
    """
    valid = [i for i, h in enumerate(hashes) if h]
    if not valid:
        return pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=np.int64)
    raw = b"".join(bytes.fromhex(hashes[i]) for i in valid)
    words = np.frombuffer(raw, dtype=np.uint64).reshape(len(valid), -1)
    index = np.array(valid, dtype=np.int64)
    found = []
    block = 256
    for start in range(0, len(words), block):
        part, rest = words[start : start + block], words[start:]
        distance = np.bitwise_count(part[:, None, :] ^ rest[None, :, :]).sum(-1)
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows  # each pair once, never an image with itself
        rows, cols = rows[keep], cols[keep]
        found.append(
            pd.DataFrame(
                {
                    "i": index[rows + start],
                    "j": index[cols + start],
                    "distance": distance[rows, cols].astype(np.int64),
                }
            )
        )
    return pd.concat(found, ignore_index=True)


def near_duplicates(
    manifest: pd.DataFrame, max_distance: int = NEAR_DUPLICATE_BITS
) -> pd.DataFrame:
    """Pairs of valid files that look like the same photo (also re-encoded or resized):
    ``path_a, label_a, path_b, label_b, distance`` (bits of the 256-bit difference hash)."""
    valid = manifest[manifest["ok"]].reset_index(drop=True)
    pairs = near_duplicate_pairs(valid["dhash"].tolist(), max_distance)
    a = valid.loc[pairs["i"], ["path", "label"]].reset_index(drop=True).add_suffix("_a")
    b = valid.loc[pairs["j"], ["path", "label"]].reset_index(drop=True).add_suffix("_b")
    return pd.concat([a, b, pairs[["distance"]].reset_index(drop=True)], axis=1)


def duplicate_groups(manifest: pd.DataFrame, max_distance: int = NEAR_DUPLICATE_BITS) -> pd.Series:
    """A group id per row: rows with the same ``sha256``, or ``dhash`` values at most
    ``max_distance`` bits apart (the same photo re-encoded or resized), share an id."""
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[a] = b

    first: dict[str, int] = {}
    for i, value in enumerate(manifest["sha256"].tolist()):
        if value:
            union(i, first.setdefault(value, i))
    pairs = near_duplicate_pairs(manifest["dhash"].tolist(), max_distance)
    for i, j in zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True):
        union(i, j)
    roots = [find(i) for i in range(len(manifest))]
    return pd.Series(pd.factorize(pd.Series(roots))[0], index=manifest.index, name="group")
