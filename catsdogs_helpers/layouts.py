"""How labels are read (``LABELS``): class folders, file names (``LABEL_PATTERN``) or a CSV of
``path,label``; each yields the same table of ``path`` and ``label``."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from .config import Layout, check_label
from .plumbing import read_csv

log = logging.getLogger(__name__)

IMAGE_ROOT_NAME = "PetImages"
LABELS_CSV_NAME = "labels.csv"  # looked for beside the photos when LABELS_CSV is empty
DATA_FOLDER_NAMES = ("cache",)  # the series' decoded cache inside DATA_DIR: never a class
#: What a photo's name ends with (also for your own photos to predict).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CSV_COLUMNS = ("path", "label")
EXAMPLES = 3  # file names quoted in a message
FOLDERS = Layout()  # class folders, the series' own layout (LABELS="")


class LayoutError(ValueError):
    """The photos do not hold labels the way ``LABELS`` says, or hold fewer than two classes."""


def describe(layout: Layout) -> str:
    """The layout in words, for messages."""
    if layout.source == "filenames":
        return f"photos named like cat.123.jpg, labelled by LABEL_PATTERN={layout.pattern!r}"
    if layout.source == "csv":
        return f"a CSV of {', '.join(CSV_COLUMNS)} ({layout.csv_path or LABELS_CSV_NAME})"
    return "one folder of photos per class (<root>/<class>/<photo>)"


def _visible(entry: os.DirEntry | Path) -> bool:
    """Not hidden (``.DS_Store``, ``.extracting-*``), nor ``__MACOSX``-style, nor the cache."""
    return not entry.name.startswith((".", "_")) and entry.name not in DATA_FOLDER_NAMES


def class_folders(image_root: str | os.PathLike[str]) -> list[Path]:
    """The class sub-folders of ``image_root``, sorted by name."""
    return sorted(p for p in Path(image_root).iterdir() if p.is_dir() and _visible(p))


def _loose_files(folder: Path) -> list[str]:
    """The sorted names of the visible photos (by suffix) directly in ``folder``."""
    with os.scandir(folder) as entries:
        photos = [e for e in entries if _visible(e) and e.name.lower().endswith(PHOTO_SUFFIXES)]
        return sorted(e.name for e in photos if not e.is_dir())


def holds_layout(folder: Path, layout: Layout) -> bool:
    """Whether ``folder`` looks like an image root of ``layout`` (its labels may still fail)."""
    if not folder.is_dir():
        return False
    if layout.source == "filenames":
        return bool(_loose_files(folder))
    if layout.source == "csv":
        return (layout.csv_path or folder / LABELS_CSV_NAME).is_file()
    return bool(class_folders(folder))


def check_no_loose_photos(data_dir: Path, layout: Layout) -> None:
    """Raise :class:`LayoutError` when ``data_dir`` holds loose photos that ``layout`` does not
    read (checked before downloading there)."""
    loose = _loose_files(data_dir) if data_dir.is_dir() else []
    if not loose:
        return
    labelled = _labels_by_name(loose, layout.pattern)
    named, labels = list(labelled), set(labelled.values())
    if len(labels) >= 2:
        advice = (
            f"found {len(named)} photos named like {named[0]} ({len(labels)} classes by "
            f"their names: {', '.join(sorted(labels)[:5])}) and no class folders: set "
            'LABELS="filenames" to read their labels from the names (LABEL_PATTERN)'
        )
    else:
        advice = (
            f"found {len(loose)} photos (like {loose[0]}) and no {describe(layout)}: put them "
            'in one folder per class, or set LABELS to "filenames" or "csv"'
        )
    raise LayoutError(
        f"{data_dir}: {advice}. Nothing is downloaded into a folder that holds photos."
    )


def find_image_root(data_dir: str | os.PathLike[str], layout: Layout = FOLDERS) -> Path | None:
    """The image root for ``layout``: ``PetImages/``, the only folder, or ``data_dir`` itself
    (with ``LABELS_CSV`` set, its folder); None when there is none yet."""
    if layout.source == "csv" and layout.csv_path is not None:
        return layout.csv_path.parent if layout.csv_path.is_file() else None
    data_dir = Path(data_dir)
    top = class_folders(data_dir) if data_dir.is_dir() else []
    candidates = [data_dir / IMAGE_ROOT_NAME, *(top if len(top) == 1 else []), data_dir]
    return next((c for c in candidates if holds_layout(c, layout)), None)


def read_labels(image_root: str | os.PathLike[str], layout: Layout = FOLDERS) -> pd.DataFrame:
    """Columns ``path`` (relative, sorted) and ``label``, as ``layout`` says; raises
    :class:`LayoutError` for fewer than two classes."""
    root = Path(image_root)
    if layout.source == "filenames":
        table = _from_file_names(root, layout.pattern)
    elif layout.source == "csv":
        table = _from_csv(root, layout.csv_path or root / LABELS_CSV_NAME)
    else:  # every entry of each class folder, broken ones too: validation gives them a verdict
        rows = [(f"{d.name}/{e.name}", d.name) for d in class_folders(root) for e in os.scandir(d)]
        table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    counts = table["label"].map(check_label).value_counts().sort_index()  # each label checked
    if len(counts) < 2:
        found = f"one class, {counts.index[0]!r} ({counts.iloc[0]} files)" if len(counts) else ""
        raise LayoutError(
            f"found {found or 'no photos'} in {root}, read as {describe(layout)}. A classifier "
            "needs at least two classes, each with photos: add the other class(es), or set "
            "LABELS (and LABEL_PATTERN or LABELS_CSV) to how your photos are labelled."
        )
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def _labels_by_name(names: list[str], pattern: str) -> dict[str, str]:
    """``{name: label}`` for the names whose ``pattern`` match captures a label (group 1)."""
    matches = ((name, re.search(pattern, name)) for name in names)
    return {name: m.group(1) for name, m in matches if m and m.group(1)}


def _from_file_names(root: Path, pattern: str) -> pd.DataFrame:
    """The loose photos whose names ``pattern`` matches, labelled by its first group."""
    names = _loose_files(root)
    labelled = _labels_by_name(names, pattern)
    rows = list(labelled.items())
    unmatched = [name for name in names if name not in labelled]
    if names and not rows:
        raise LayoutError(
            f"LABEL_PATTERN={pattern!r} matches none of the {len(names)} photos in {root} (such "
            f"as {_examples(unmatched)}): its first group must capture the label, as "
            "'^([A-Za-z]+)[._-]' captures 'cat' in cat.123.jpg."
        )
    if unmatched:
        message = "left out %d photos whose names LABEL_PATTERN=%r does not match: %s"
        log.warning(message, len(unmatched), pattern, _examples(unmatched))
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def _examples(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:EXAMPLES])
    return shown + (f" and {len(names) - EXAMPLES} more" if len(names) > EXAMPLES else "")


def _from_csv(root: Path, path: Path) -> pd.DataFrame:
    """The CSV's rows, paths relative to ``root`` (missing files kept, for validation)."""
    table = _read_csv(path)
    blank = (table["path"] == "") | (table["label"] == "")
    if blank.any():
        log.warning("%s: left out %d rows without a path or a label", path.name, blank.sum())
    table = table[~blank].assign(path=lambda t: t["path"].map(lambda p: _inside(p, path)))
    table = table.drop_duplicates()
    twice = table[table["path"].duplicated(keep=False)].sort_values("path")
    if len(twice):
        shown = "; ".join(f"{p}: {', '.join(g['label'])}" for p, g in twice.groupby("path"))
        message = f"{path} gives some files more than one label ({shown[:300]})"
        raise LayoutError(f"{message}: give each file one label.")
    missing = [p for p in table["path"] if not (root / p).exists()]
    if missing and len(missing) == len(table):
        raise LayoutError(
            f"none of the {len(table)} paths in {path} is a file under {root} (such as "
            f"{_examples(missing)}): write each path relative to the CSV's folder."
        )
    if missing:
        message = "%s names %d files that are not there (validation lists them as unreadable): %s"
        log.warning(message, path.name, len(missing), _examples(missing))
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    """The ``path`` and ``label`` columns of the CSV at ``path``, as stripped text."""
    if not path.is_file():
        raise LayoutError(
            f"LABELS_CSV: {path} is not a file. Give the path of a CSV with the columns "
            f"{', '.join(CSV_COLUMNS)} (relative paths are inside DATA_DIR), or put "
            f"{LABELS_CSV_NAME} beside the photos."
        )
    table = read_csv(path, skipinitialspace=True)
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise LayoutError(
            f"{path} lacks the column(s) {', '.join(missing)} (it has: "
            f"{', '.join(table.columns) or 'none'}): its first line must name the columns "
            f"{', '.join(CSV_COLUMNS)}, one row per photo."
        )
    return table[list(CSV_COLUMNS)].apply(lambda column: column.str.strip())


def _inside(text: str, csv_path: Path) -> str:
    """A CSV path as ``a/b.jpg``: relative to the CSV's folder, never leaving it."""
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise LayoutError(
            f"{csv_path} names {text!r}: write each path relative to the CSV's folder "
            f"({csv_path.parent}), without '..'."
        )
    return path.as_posix()
