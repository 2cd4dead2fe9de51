"""Validating every file: a verdict (``reason``) and a note per file, written to a manifest.
Each JPEG is decoded once, in grayscale at reduced scale (every byte still read), and its
difference hash taken from that; what is no regular file is never opened."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .config import Layout
from .duplicates import DHASH_MIN_SIDE, dhash
from .images import NotAFile, jpeg_gray, open_file, open_image, reduction_for
from .layouts import FOLDERS, read_labels
from .plumbing import held, map_chunks, read_csv, remove_stale_temporaries, write_csv

log = logging.getLogger(__name__)

#: The version of :func:`check_image`: rows of another version are checked again.
CHECKER = 2
#: Formats decoded as JPEG (MPO: a camera JPEG with extra images).
JPEG_FORMATS = ("JPEG", "MPO")
MIN_SIDE = 32
#: Files larger than this are ``too_large`` without a byte read (a test may shrink it).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Bytes read (and hashed) at a time.
READ_CHUNK = 1024 * 1024
#: Examples named in a message.
EXAMPLES = 3


@dataclass
class Verdict:
    """What :func:`check_image` finds: a manifest row's fields but ``path`` and ``label``."""

    ok: bool = False
    reason: str = ""
    note: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    bytes: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    dhash: str = ""
    decoder_warnings: int = 0
    checker: int = CHECKER


MANIFEST_COLUMNS = ["path", "label", *(field.name for field in fields(Verdict))]


def check_image(path: str | os.PathLike[str], *, min_side: int = MIN_SIDE) -> dict:
    """Check one file; returns its :class:`Verdict` as a dict."""
    row = Verdict()
    data = _read_file(path, row)
    header, orientation = _read_header(data, row, min_side) if data else (None, 1)
    if header is not None:
        notes = [] if row.format == "JPEG" else [f"{row.format} content"]
        gray = _decode_gray(data, header, row, notes)
        if gray is not None:
            if header.mode != "RGB":
                notes.append(f"converted from {header.mode}")
            if orientation not in (1, None):
                notes.append(f"EXIF orientation {orientation} applied")
            row.ok, row.reason, row.note, row.dhash = True, "ok", "; ".join(notes), dhash(gray)
    return asdict(row)


def _read_file(path: str | os.PathLike[str], row: Verdict) -> bytes | None:
    """The file's bytes, or None with ``row.reason`` set."""
    try:
        with open_file(path) as file:
            info = os.fstat(file.fileno())
            row.bytes, row.mtime_ns = info.st_size, info.st_mtime_ns
            if info.st_size > MAX_FILE_BYTES:
                row.reason = "too_large"
                row.note = f"{info.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit"
                return None
            data = _read_chunks(file, row)
    except NotAFile as err:
        regular = stat.S_ISREG(err.info.st_mode)  # a system file: the size list_files gives
        row.bytes, row.mtime_ns = (err.info.st_size if regular else 0), err.info.st_mtime_ns
        row.reason, row.note = "not_a_file", str(err)
        return None
    except OSError as err:
        row.reason, row.note = "unreadable", err.strerror or str(err)
        return None
    if data is not None:
        row.reason = "" if data else "empty"
    return data


def _read_chunks(file: BinaryIO, row: Verdict) -> bytes | None:
    """The rest of ``file``, hashed as read; None (``too_large``) past ``MAX_FILE_BYTES``."""
    digest, chunks, size = hashlib.sha256(), [], 0
    while chunk := file.read(READ_CHUNK):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            row.bytes, row.reason = size, "too_large"
            row.note = f"grew past the {MAX_FILE_BYTES:,}-byte limit while it was read"
            return None
        digest.update(chunk)
        chunks.append(chunk)
    row.bytes, row.sha256 = size, digest.hexdigest()
    return b"".join(chunks)


def _read_header(data: bytes, row: Verdict, min_side: int) -> tuple[Image.Image | None, int]:
    """The image opened (header only) and a JPEG's EXIF orientation; None when unusable."""
    try:
        header = Image.open(io.BytesIO(data))
        row.format, (row.width, row.height) = header.format or "", header.size
        orientation = header.getexif().get(0x0112, 1) if row.format in JPEG_FORMATS else 1
    except UnidentifiedImageError:
        row.reason = "not_an_image"
    except Image.DecompressionBombError as err:
        row.reason, row.note = "too_large", str(err)[:200]
    except (OSError, ValueError, SyntaxError) as err:
        row.reason, row.note = "corrupt", str(err)[:200]
    else:
        if row.width * row.height > Image.MAX_IMAGE_PIXELS:
            row.reason, row.note = "too_large", f"{row.width}x{row.height} pixels"
        elif min(row.width, row.height) < min_side:
            row.reason = "too_small"
        else:
            return header, orientation
    return None, 1


def _decode_gray(data: bytes, header: Image.Image, row: Verdict, notes: list[str]):
    """The photo fully decoded in grayscale (a JPEG by OpenCV, else by Pillow), or None."""
    if row.format in JPEG_FORMATS:
        gray, messages = jpeg_gray(data, reduction_for(header.size, DHASH_MIN_SIDE))
        row.decoder_warnings = len(messages)
        row.reason, row.note = _jpeg_problem(gray, messages, data)
        if row.reason:
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
        row.reason, row.note = "too_large", str(err)[:200]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as err:
        row.reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        row.note = str(err)[:200]
    return None


def _jpeg_problem(gray: np.ndarray | None, messages: list[str], data: bytes) -> tuple[str, str]:
    """The reason and note that reject a JPEG; empty when nothing is wrong with it yet."""
    ended_early = [m for m in messages if "premature end" in m.lower()]
    if ended_early:
        # a marker before the data was complete: at the file's end it was cut, else corrupt
        cut = "of JPEG file" in ended_early[0] or _scan_data_runs_to_the_end(data)
        return ("truncated" if cut else "corrupt"), ended_early[0][:200]
    if gray is None and not _closed(data):
        return "truncated", "truncated: the file stops before the image data is complete"
    if gray is None and messages:
        return "corrupt", messages[0][:200]
    return "", ""


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
    return marker is not None and marker.start() == len(data.rstrip(b"\0")) - 2


def list_files(image_root: str | os.PathLike[str], layout: Layout = FOLDERS) -> pd.DataFrame:
    """Every file ``layout`` labels under ``image_root``, with its size (0 if not a regular
    file) and modification time."""
    root = Path(image_root)
    files = read_labels(root, layout)
    sizes = [_size_and_time(root / path) for path in files["path"]]
    return files.join(pd.DataFrame(sizes, columns=["bytes", "mtime_ns"], index=files.index))


def _size_and_time(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:  # not there, or a broken link: validation says "unreadable"
        return 0, 0
    return (info.st_size if stat.S_ISREG(info.st_mode) else 0), info.st_mtime_ns


def peek_sizes(image_root: str | os.PathLike[str], files: pd.DataFrame) -> pd.DataFrame:
    """Format, width and height from each file's header only (empty where not opened)."""
    rows = []
    for path in files["path"]:
        try:
            with open_file(Path(image_root) / path) as file, Image.open(file) as image:
                rows.append((image.format or "", *image.size))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            rows.append(("", 0, 0))
    return files.join(pd.DataFrame(rows, columns=["format", "width", "height"], index=files.index))


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
    """Check every file ``layout`` labels under ``image_root``; return (and write) the manifest.
    Files unchanged in size and time keep their verdict from ``manifest_path``."""
    locked = manifest_path is not None
    with held(f"{manifest_path}.lock", "validating the photos") if locked else nullcontext():
        files = list_files(image_root, layout)  # at least two classes, or a LayoutError
        previous = pd.DataFrame(columns=MANIFEST_COLUMNS)
        if locked and Path(manifest_path).is_file():
            try:
                previous = read_manifest(manifest_path)
            except ValueError as err:
                log.warning("checking every file again: %s", err)
        previous = previous.drop(columns=["label"])
        merged = files.merge(previous, on=["path", "bytes", "mtime_ns"], how="left")
        todo = merged.index[merged["reason"].fillna("").eq("") | merged["checker"].ne(CHECKER)]
        if len(todo):
            options = {"min_side": min_side, "workers": workers, "progress": progress}
            merged = _check_rows(merged, todo, image_root, **options)
        reused = len(merged) - len(todo)
        log.info("checked %d files (%d reused from the manifest)", len(todo), reused)
        manifest = _typed(merged[MANIFEST_COLUMNS].copy())
        if locked:
            remove_stale_temporaries(manifest_path)  # a killed write's, under this lock
            write_manifest(manifest, manifest_path)
    return manifest


def _check_rows(
    merged: pd.DataFrame, todo: pd.Index, image_root: str | os.PathLike[str], **options
) -> pd.DataFrame:
    """``merged`` with the rows ``todo`` checked, logging those that link out of the root."""
    names = list(merged.loc[todo, "path"])
    outside = _links_out(image_root, names)
    if outside:
        shown = ", ".join(repr(name) for name in outside[:EXAMPLES])
        message = "%d of the files lead out of %s through a link, followed (docs/own-data.md): %s"
        log.warning(message, len(outside), image_root, shown)
    results = check_files([os.path.join(image_root, name) for name in names], **options)
    checked = pd.DataFrame(results, index=todo)
    merged = merged.astype(dict.fromkeys(checked.columns, object))
    merged.loc[todo, checked.columns] = checked
    return merged


def _links_out(image_root: str | os.PathLike[str], names: list[str]) -> list[str]:
    """Those of ``names`` that lead out of ``image_root`` through a link."""
    top = os.path.join(os.path.realpath(image_root), "")
    real = (os.path.realpath(os.path.join(image_root, name)) for name in names)
    return [name for name, path in zip(names, real, strict=True) if not path.startswith(top)]


def check_files(
    paths: list[str], *, min_side: int = MIN_SIDE, workers: int | None = None, progress: bool = True
) -> list[dict]:
    """:func:`check_image` for each of ``paths``, in order, on all cores (``workers``)."""
    chunks = map_chunks(
        _check_many, paths, min_side, workers=workers, desc="validating", progress=progress
    )
    return [row for _, checked in chunks for row in checked]


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the manifest CSV atomically (:func:`plumbing.write_csv`)."""
    return write_csv(manifest, path)


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest written by :func:`validate_folder`."""
    manifest = read_csv(path)
    if "checker" not in manifest.columns:  # written before the column existed
        manifest["checker"] = "1"
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise ValueError(f"{path} is not a manifest: columns {sorted(missing)} are missing")
    manifest["ok"] = manifest["ok"].str.lower().isin({"true", "1"})
    return _typed(manifest[MANIFEST_COLUMNS])


def _typed(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's column types, the same whether just made or read from CSV."""
    kinds = {"path": "str", "label": "str"} | {f.name: f.type for f in fields(Verdict)}
    text = dict.fromkeys([column for column, kind in kinds.items() if kind == "str"], "")
    return manifest.fillna(text).astype(kinds).reset_index(drop=True)  # "int" is int64


def reason_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Files per reason and class: the report to read after validation."""
    table = pd.crosstab(manifest["reason"], manifest["label"], margins=True, margins_name="total")
    return table.sort_values("total", ascending=False)
