"""Duplicates: the same photo twice, byte for byte (the same sha256) or re-encoded and resized
(found by its difference hash, :func:`dhash`, a few bits from the original's)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

#: Hashes this many bits apart or closer are the same photo: the split keeps them together.
NEAR_DUPLICATE_BITS = 12
#: The leakage report's looser threshold: similar photos, not only copies, across splits.
LEAKAGE_REPORT_BITS = 24
#: The hash is taken from a grayscale copy whose shorter side is at least this.
DHASH_MIN_SIDE = 128


def dhash(image: Image.Image | np.ndarray, size: int = 16) -> str:
    """A 256-bit difference hash (hex) of an image (shorter side :data:`DHASH_MIN_SIDE` or more):
    whether each cell of a ``size`` x ``size + 1`` grid is brighter than its left neighbour."""
    gray = np.asarray(image.convert("L")) if isinstance(image, Image.Image) else image
    # exact mean per cell (cut pixels count in part), from sums[y, x] = gray[:y, :x].sum()
    h, w = gray.shape
    sums = cv2.integral(gray)
    ys, xs = np.linspace(0, h, size + 1), np.linspace(0, w, size + 2)
    y0, x0 = np.minimum(ys.astype(np.intp), h - 1), np.minimum(xs.astype(np.intp), w - 1)
    fy, fx = (ys - y0)[:, None], xs - x0
    at_rows = sums[y0] * (1 - fy) + sums[y0 + 1] * fy
    corners = at_rows[:, x0] * (1 - fx) + at_rows[:, x0 + 1] * fx
    cells = np.diff(np.diff(corners, axis=0), axis=1) / ((h / size) * (w / (size + 1)))
    return np.packbits(cells[:, 1:] > cells[:, :-1]).tobytes().hex()


def find_duplicates(manifest: pd.DataFrame, *, key: str = "sha256") -> pd.DataFrame:
    """Groups of valid files with the same ``key`` (``sha256``: byte-identical copies);
    ``n_labels`` > 1 where one photo is filed under several classes."""
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
    """Pairs ``(i, j)``, ``i < j``, of difference hashes at most ``max_distance`` bits apart;
    empty ones never match."""
    valid = np.array([i for i, h in enumerate(hashes) if h], dtype=np.int64)
    words = np.array([np.frombuffer(bytes.fromhex(hashes[i]), np.uint64) for i in valid])
    found = [np.empty((3, 0), np.int64)]
    for start in range(0, len(words), 256):
        distance = np.bitwise_count(words[start : start + 256, None] ^ words[None, start:])
        distance = distance.sum(-1, dtype=np.int64)
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows  # each pair once, never an image with itself
        rows, cols = rows[keep], cols[keep]
        found.append(np.stack([valid[rows + start], valid[cols + start], distance[rows, cols]]))
    return pd.DataFrame(np.concatenate(found, axis=1).T, columns=["i", "j", "distance"])


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
    """A group id per row, shared by rows with the same ``sha256`` or ``dhash`` values at most
    ``max_distance`` bits apart."""
    n = len(manifest)
    codes, shas = pd.factorize(manifest["sha256"])
    rows = np.flatnonzero((codes >= 0) & (manifest["sha256"].to_numpy() != ""))
    pairs = near_duplicate_pairs(manifest["dhash"].tolist(), max_distance)
    # One graph: an edge between close hashes, and from each file to a node for its sha256.
    i = np.concatenate([pairs["i"].to_numpy(), rows])
    j = np.concatenate([pairs["j"].to_numpy(), n + codes[rows]])
    graph = coo_array((np.ones(len(i)), (i, j)), shape=(n + len(shas),) * 2)
    components = connected_components(graph, directed=False)[1][:n]
    return pd.Series(pd.factorize(components)[0], index=manifest.index, name="group")
