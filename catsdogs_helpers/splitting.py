"""Splitting: seeded and stratified. Copies of a photo (same bytes or close hashes) form a
group: one filed under two classes is left out, of any other only one file is used, so no
photo sits in both train and test."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from .duplicates import LEAKAGE_REPORT_BITS, duplicate_groups, near_duplicates
from .plumbing import read_csv, write_csv
from .runs import RunConflict

SPLIT_COLUMNS = ["path", "label", "split", "reason", "group", "sha256"]
SPLITS = ("train", "val", "test")


def split_dataset(
    manifest: pd.DataFrame,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    limit_per_class: int = 0,
) -> pd.DataFrame:
    """Each valid file's ``split`` (``train``, ``val``, ``test`` or ``excluded`` with a reason);
    ``limit_per_class`` (0 = all) keeps a seeded subset; too few images raise ``ValueError``."""
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum to under 1")
    labels = sorted(manifest["label"].unique())
    valid = manifest[manifest["ok"]].reset_index(drop=True)
    empty = sorted(set(labels) - set(valid["label"]))
    if empty or len(labels) < 2:
        raise ValueError(
            f"need at least two classes with valid images; empty: {empty or 'none'}, found: "
            f"{labels}. Each class needs a folder of images under the image root."
        )
    out, pool = _exclusions(valid, seed, limit_per_class)
    counts = pool["label"].value_counts()
    if (counts < 10).any() or len(counts) < 2:
        raise ValueError(
            f"too few usable images to split: {counts.to_dict()}; every class needs at least "
            "10 (raise LIMIT_PER_CLASS or add images)"
        )
    cut = partial(train_test_split, random_state=seed)
    rest, test = cut(pool.index, test_size=test_fraction, stratify=pool["label"])
    val_size = val_fraction / (1 - test_fraction)
    train, val = cut(rest, test_size=val_size, stratify=pool.loc[rest, "label"])
    out.loc[train, "split"], out.loc[val, "split"], out.loc[test, "split"] = SPLITS
    return out.sort_values("path").reset_index(drop=True)[SPLIT_COLUMNS]


def _exclusions(valid: pd.DataFrame, seed: int, limit: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split table with label conflicts, extra copies and (``limit``) the photos over it
    excluded, and the rows left to split."""
    out = valid[["path", "label", "sha256"]].assign(split="", reason="")
    out["group"] = duplicate_groups(valid)
    conflict = out.groupby("group")["label"].transform("nunique") > 1
    extra = out[~conflict].sort_values("path").duplicated("group", keep="first")
    out.loc[conflict, ["split", "reason"]] = ["excluded", "label_conflict"]
    out.loc[extra[extra].index, ["split", "reason"]] = ["excluded", "duplicate"]
    pool = out[out["split"] == ""]
    if limit:
        kept = pd.concat(
            g.sample(min(len(g), limit), random_state=seed) for _, g in pool.groupby("label")
        )
        out.loc[pool.index.difference(kept.index), ["split", "reason"]] = ["excluded", "over_limit"]
        pool = kept
    return out, pool


def split_summary(split: pd.DataFrame) -> pd.DataFrame:
    """Images per split and class (excluded files by reason)."""
    names = split["split"].where(split["split"] != "excluded", "excluded: " + split["reason"])
    return pd.crosstab(names, split["label"], margins=True, margins_name="total")


def save_split(
    split: pd.DataFrame, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``split`` to ``path``; a different split there raises ``RunConflict`` unless
    ``overwrite`` (it means the settings changed)."""
    path = Path(path)
    if path.is_file() and not overwrite:
        columns = ["path", "label", "split"]
        if read_split(path)[columns].equals(split[columns]):
            return path
        raise RunConflict(
            f"{path} holds a different split (the data, SEED or LIMIT_PER_CLASS changed). "
            "Use a new RUN_NAME, or set OVERWRITE=True to replace it."
        )
    return write_csv(split, path)


def read_split(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a split written by :func:`save_split`."""
    split = read_csv(path, dtype=dict.fromkeys(["path", "label", "sha256"], str))
    missing = {"path", "label", "split"} - set(split.columns)
    if missing:
        raise ValueError(f"{path} is not a split file: columns {sorted(missing)} are missing")
    return split


def class_names(split: pd.DataFrame) -> list[str]:
    """The class names, sorted: index i of the model's output is ``class_names[i]``."""
    return sorted(split.loc[split["split"].isin(SPLITS), "label"].unique())


def leakage_report(
    split: pd.DataFrame, manifest: pd.DataFrame, max_distance: int = LEAKAGE_REPORT_BITS
) -> pd.DataFrame:
    """Pairs of photos in different splits whose difference hashes are at most
    ``max_distance`` bits apart (a looser threshold than the split's)."""
    used = split[split["split"].isin(SPLITS)].set_index("path")["split"]
    report = near_duplicates(manifest[manifest["path"].isin(used.index)], max_distance)
    report = report.assign(split_a=report["path_a"].map(used), split_b=report["path_b"].map(used))
    return report[report["split_a"] != report["split_b"]].sort_values("distance")
