"""Validating every file: a verdict and a reason per file, written to a manifest.

Verdicts:

========================  ======  ==========================================================
reason                    kept?   what it means
========================  ======  ==========================================================
``ok``                    yes     decodes completely (PNG/BMP/GIF behind ``.jpg``, CMYK,
                                  grayscale, RGBA and 16-bit images are converted to RGB;
                                  the ``note`` column says which)
``empty``                 no      zero bytes
``not_an_image``          no      not a format any decoder knows (HTML page, ``Thumbs.db``)
``truncated``             no      the data ends before the image does (also when an end
                                  marker follows: libjpeg's "premature end of data segment")
``corrupt``               no      the decoder failed for another reason, or the data has
                                  damaged bytes in the middle
``too_small``             no      shorter side under ``min_side`` pixels (1x1 trackers)
``too_large``             no      more pixels than :data:`images.MAX_PIXELS` (a bomb header)
``unreadable``            no      the operating system refused to read it
``not_a_file``            no      a folder (or other non-file) with an image's name
========================  ======  ==========================================================

Kept files can carry notes: the format when it is not JPEG, the mode converted from, an EXIF
rotation that was applied, bytes after the JPEG end marker, and the number of warnings
libjpeg printed while decoding (``decoder_warnings``; those messages are captured, not
printed).

The check decodes each JPEG once, in grayscale at reduced scale (1/2 for a 500x375 photo,
so that at least 128 pixels remain on the shorter side): the decoder still reads every byte
of the compressed data, so a truncated or broken file is caught, but skips much of the
arithmetic, and the difference hash for near duplicates (:mod:`duplicates`) is taken from
that same image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .config import Layout
from .duplicates import DHASH_MIN_SIDE, dhash
from .files import atomic_path
from .images import jpeg_gray, open_image, reduction_for
from .layouts import FOLDERS, read_labels
from .locks import held
from .parallel import map_chunks

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "path", "label", "ok", "reason", "note", "format", "width", "height",
    "bytes", "mtime_ns", "sha256", "dhash", "decoder_warnings", "checker",
]  # fmt: skip
#: The version of :func:`check_image` that wrote a manifest row. Rows of another version are
#: checked again, so that every difference hash in a manifest is made the same way.
CHECKER = 2
#: Formats decoded as JPEG: MPO is what Pillow calls a camera JPEG with extra images.
JPEG_FORMATS = ("JPEG", "MPO")
MIN_SIDE = 32


def check_image(path: str | os.PathLike[str], *, min_side: int = MIN_SIDE) -> dict:
    """Check one file and return its manifest fields (everything but ``path`` and ``label``).

    A JPEG is decoded once, in grayscale at reduced scale (:func:`images.jpeg_gray`): enough
    to run all of its compressed data through the decoder and to take the difference hash.
    Other formats, and the rare JPEG that OpenCV declines without a message, are decoded in
    full by Pillow. Each step below sets ``reason`` and stops the check when it finds one.
    """
    row: dict = {
        "ok": False, "reason": "", "note": "", "format": "", "width": 0, "height": 0,
        "bytes": 0, "mtime_ns": 0, "sha256": "", "dhash": "", "decoder_warnings": 0,
        "checker": CHECKER,
    }  # fmt: skip
    data = _read_file(path, row)
    header, orientation = _read_header(data, row) if data else (None, 1)
    if header is None or _size_problem(row, min_side):
        return row
    notes = [] if row["format"] == "JPEG" else [f"{row['format']} content"]
    gray = _decode_gray(data, header, row, notes)
    if gray is None:
        return row
    if header.mode != "RGB":
        notes.append(f"converted from {header.mode}")
    if orientation not in (1, None):
        notes.append(f"EXIF orientation {orientation} applied")
    row.update(ok=True, reason="ok", note="; ".join(notes), dhash=dhash(gray))
    return row


def _read_file(path: str | os.PathLike[str], row: dict) -> bytes | None:
    """The file's bytes, with size, time and sha256 in ``row``; None (and a reason) when it
    is not a readable regular file, b"" when it is empty."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            row["reason"] = "not_a_file"
            return None
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        row["reason"], row["note"] = "unreadable", err.strerror or str(err)
        return None
    row["bytes"], row["mtime_ns"] = len(data), info.st_mtime_ns
    row["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        row["reason"] = "empty"
    return data


def _read_header(data: bytes, row: dict) -> tuple[Image.Image | None, int]:
    """The image as Pillow opens it (header only) and a JPEG's EXIF orientation, with format
    and size in ``row``; ``(None, 1)`` and a reason when Pillow cannot read it as an image."""
    try:
        header = Image.open(io.BytesIO(data))
        row["format"] = header.format or ""
        row["width"], row["height"] = header.size
        jpeg = row["format"] in JPEG_FORMATS
        return header, header.getexif().get(0x0112, 1) if jpeg else 1
    except UnidentifiedImageError:
        row["reason"] = "not_an_image"
    except Image.DecompressionBombError as err:
        row["reason"], row["note"] = "too_large", str(err)[:200]
    except (OSError, ValueError, SyntaxError) as err:
        row["reason"], row["note"] = "corrupt", str(err)[:200]
    return None, 1


def _size_problem(row: dict, min_side: int) -> bool:
    """True (and a reason) when the declared size is absurdly large or too small to use."""
    if row["width"] * row["height"] > Image.MAX_IMAGE_PIXELS:
        row["reason"] = "too_large"
        row["note"] = f"{row['width']}x{row['height']} pixels"
    elif min(row["width"], row["height"]) < min_side:
        row["reason"] = "too_small"
    return bool(row["reason"])


def _decode_gray(data: bytes, header: Image.Image, row: dict, notes: list[str]):
    """The photo in grayscale, decoding all of its data; None (and a reason) when that fails.
    JPEGs go through OpenCV at reduced scale, anything else (or a JPEG OpenCV declines
    without a message) through Pillow."""
    gray = None
    if row["format"] in JPEG_FORMATS:
        gray, messages = jpeg_gray(data, reduction_for(header.size, DHASH_MIN_SIDE))
        row["decoder_warnings"] = len(messages)
        problem = _jpeg_problem(gray, messages, data)
        if problem:
            row["reason"], row["note"] = problem
            return None
        if not _closed(data):
            notes.append("bytes after the end marker")
        if messages:
            notes.append(f"{len(messages)} decoder warning(s): {messages[0][:80]}")
    if gray is not None:
        return gray
    try:
        return open_image(data).convert("L")
    except Image.DecompressionBombError as err:
        row["reason"], row["note"] = "too_large", str(err)[:200]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as err:
        message = str(err)
        row["reason"] = "truncated" if "truncated" in message.lower() else "corrupt"
        row["note"] = message[:200]
    return None


def _jpeg_problem(
    gray: np.ndarray | None, messages: list[str], data: bytes
) -> tuple[str, str] | None:
    """The reason and note that reject a JPEG, or ``None`` when nothing is wrong with it yet
    (it decoded, or OpenCV declined it without a message and Pillow is to decide)."""
    ended_early = [m for m in messages if "premature end" in m.lower()]
    if ended_early:
        # libjpeg met a marker before the image data was complete. When that marker is the
        # file's end marker, the file was cut short (and perhaps closed again): the rest of
        # the photo is grey. A marker in the middle of the data is corruption.
        cut = "of JPEG file" in ended_early[0] or _scan_data_runs_to_the_end(data)
        return ("truncated" if cut else "corrupt"), ended_early[0][:200]
    if gray is None and not _closed(data):
        return "truncated", "truncated: the file stops before the image data is complete"
    if gray is None and messages:
        return "corrupt", messages[0][:200]
    return None


def _closed(data: bytes) -> bool:
    """Whether JPEG ``data`` ends with its end marker (zero padding allowed)."""
    return data.rstrip(b"\0").endswith(b"\xff\xd9")


_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # not stuffing, restart or fill bytes


def _scan_data_runs_to_the_end(data: bytes) -> bool:
    """Whether the compressed data of the last scan runs on to the file's end marker."""
    start = data.rfind(b"\xff\xda")
    if start < 0:
        return False
    body = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    marker = _MARKER.search(data, body)
    end = len(data.rstrip(b"\0"))
    return marker is not None and marker.start() == end - 2


def list_files(image_root: str | os.PathLike[str], layout: Layout = FOLDERS) -> pd.DataFrame:
    """Every file ``layout`` labels under ``image_root`` (:func:`layouts.read_labels`): its
    path, label, size in bytes (0 for anything but a regular file, or a file that is not
    there) and modification time."""
    root = Path(image_root)
    files = read_labels(root, layout)
    sizes = [_size_and_time(root / path) for path in files["path"]]
    files["bytes"] = [size for size, _ in sizes]
    files["mtime_ns"] = [mtime for _, mtime in sizes]
    return files


def _size_and_time(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:  # not there, or a broken link: validation says "unreadable"
        return 0, 0
    return (info.st_size if stat.S_ISREG(info.st_mode) else 0), info.st_mtime_ns


def peek_sizes(image_root: str | os.PathLike[str], files: pd.DataFrame) -> pd.DataFrame:
    """Format, width and height from each file's header only (fast; nothing is decoded).

    Files whose header cannot be read get an empty format and zero size.
    """
    root = Path(image_root)
    rows = []
    for path in files["path"]:
        try:
            with Image.open(root / path) as image:
                rows.append((image.format or "", *image.size))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            rows.append(("", 0, 0))
    sizes = pd.DataFrame(rows, columns=["format", "width", "height"], index=files.index)
    return files.join(sizes)


def _check_many(paths: list[str], min_side: int) -> list[dict]:
    return [check_image(p, min_side=min_side) for p in paths]


def validate_folder(
    image_root: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str] | None = None,
    *,
    min_side: int = MIN_SIDE,
    workers: int | None = None,
    progress: bool = True,
    layout: Layout = FOLDERS,
) -> pd.DataFrame:
    """Check every file ``layout`` labels under ``image_root`` and return (and write) the
    manifest.

    When ``manifest_path`` exists, files whose size and modification time are unchanged keep
    their earlier verdict: a re-run only checks what is new or changed (and everything when
    the manifest was written by an earlier version of the check). Processes validating into
    the same manifest at once take turns (a lock file beside it): the later ones reuse the
    verdicts the first one wrote.
    """
    if manifest_path is None:
        return _validate(image_root, None, min_side=min_side, workers=workers,
                         progress=progress, layout=layout)  # fmt: skip
    lock = Path(f"{manifest_path}.lock")
    with held(lock, "validating the photos"):
        return _validate(image_root, manifest_path, min_side=min_side, workers=workers,
                         progress=progress, layout=layout)  # fmt: skip


def _validate(
    image_root: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str] | None,
    *,
    min_side: int,
    workers: int | None,
    progress: bool,
    layout: Layout,
) -> pd.DataFrame:
    """:func:`validate_folder` without the lock."""
    root = Path(image_root)
    files = list_files(root, layout)  # at least two classes, or a LayoutError

    previous = pd.DataFrame(columns=MANIFEST_COLUMNS)
    if manifest_path is not None and Path(manifest_path).is_file():
        try:
            previous = read_manifest(manifest_path)
        except ValueError as err:
            log.warning("checking every file again: %s", err)
    merged = files.merge(
        previous.drop(columns=["label"]), on=["path", "bytes", "mtime_ns"], how="left"
    )
    todo = merged.index[
        merged["reason"].isna() | (merged["reason"] == "") | (merged["checker"] != CHECKER)
    ].tolist()
    if todo:
        paths = [os.path.join(root, p) for p in merged.loc[todo, "path"]]
        results = check_files(paths, min_side=min_side, workers=workers, progress=progress)
        checked = pd.DataFrame(results, index=todo)
        merged = merged.astype({column: object for column in checked.columns})
        merged.loc[todo, checked.columns] = checked
    log.info("checked %d files (%d reused from the manifest)", len(todo), len(merged) - len(todo))
    manifest = _typed(merged[MANIFEST_COLUMNS].copy())
    if manifest_path is not None:
        write_manifest(manifest, manifest_path)
    return manifest


def check_files(
    paths: list[str],
    *,
    min_side: int = MIN_SIDE,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """:func:`check_image` for each of ``paths``, in order, on all cores (``workers``)."""
    results: list[dict] = []
    for _, checked in map_chunks(
        _check_many, paths, min_side, workers=workers, desc="validating", progress=progress
    ):
        results.extend(checked)
    return results


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the manifest CSV atomically (a temporary file renamed into place)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False)
    return path


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest written by :func:`validate_folder`."""
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "checker" not in manifest.columns:  # written before the column existed
        manifest["checker"] = "1"
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise ValueError(f"{path} is not a manifest: columns {sorted(missing)} are missing")
    manifest["ok"] = manifest["ok"].str.lower().isin({"true", "1"})
    return _typed(manifest[MANIFEST_COLUMNS])


_INT_COLUMNS = ("width", "height", "bytes", "mtime_ns", "decoder_warnings", "checker")


def _typed(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's column types, the same whether just made or read from CSV."""
    for column in MANIFEST_COLUMNS:
        if column == "ok":
            manifest[column] = manifest[column].astype(bool)
        elif column in _INT_COLUMNS:
            manifest[column] = manifest[column].astype("int64")
        else:
            manifest[column] = manifest[column].fillna("").astype(str)
    return manifest.reset_index(drop=True)


def reason_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Files per reason and class: the report to read after validation."""
    table = pd.crosstab(manifest["reason"], manifest["label"], margins=True, margins_name="total")
    return table.sort_values("total", ascending=False)
