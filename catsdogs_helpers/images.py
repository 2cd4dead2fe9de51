"""Reading photos: any format to RGB, upright, and at reduced scale when that is all we need.

JPEGs can be decoded at 1/2, 1/4 or 1/8 scale inside the decoder (Pillow's ``draft``, OpenCV's
``IMREAD_REDUCED_*``): several times faster than a full decode and a resize, and still reading
every byte of the compressed data. libjpeg's warnings are kept out of the notebook.
"""

from __future__ import annotations

import io
import math
import os
import stat
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (a "decompression bomb" header).
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

PathOrBytes = str | os.PathLike[str] | bytes

#: The kernel's own files (processes, settings, devices): never opened as a photo, wherever a
#: link to them is. ``/dev/shm`` is a RAM disk for files of one's own, opened like any folder.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
RAM_DISKS = ("/dev/shm",)
#: What a file that is not a regular one is, for the note that says why it was not opened.
KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotAFile(OSError):
    """A path never opened as a photo: a system file, or not a regular file. ``info`` is its
    status (``os.stat``, through links)."""

    def __init__(self, note: str, info: os.stat_result) -> None:
        super().__init__(note)
        self.info = info


def _under(path: str, folders: tuple[str, ...]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


def file_status(path: str | os.PathLike[str]) -> os.stat_result:
    """The status of the file ``path`` leads to (links followed, nothing opened); raises
    :class:`NotAFile` for a system file or anything but a regular file, and ``OSError`` when
    there is no file."""
    real = os.path.realpath(path)
    info = os.stat(real)
    if _under(real, SYSTEM_FOLDERS) and not _under(real, RAM_DISKS):
        raise NotAFile(f"a system file ({real}): never read", info)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in KINDS if test(info.st_mode)), "not a regular file")
        raise NotAFile(f"{kind}: never opened", info)
    return info


def _without_waiting(path: str, flags: int) -> int:
    """``os.open`` that never waits (for a FIFO's writer) nor takes a terminal."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))


def open_file(path: str | os.PathLike[str]) -> BinaryIO:
    """The regular file ``path`` leads to, opened to read (:func:`file_status` says which
    are); ``OSError`` when it was replaced by another file since it was looked at."""
    info = file_status(path)
    file = open(path, "rb", opener=_without_waiting)
    now = os.fstat(file.fileno())
    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
        file.close()
        raise OSError(f"{os.fspath(path)!r} was replaced while it was opened")
    return file


def open_image(source: PathOrBytes, *, min_side: int | None = None) -> Image.Image:
    """Decode ``source`` (a path or the file's bytes) to an upright RGB image; a JPEG at the
    smallest built-in scale that keeps ``min_side`` on its shorter side. Raises Pillow's
    ``OSError``/``ValueError`` subclasses on anything but a complete, decodable image, and
    :class:`NotAFile` for a path :func:`open_file` does not open."""
    if isinstance(source, bytes):
        return _decode(io.BytesIO(source), min_side)
    with open_file(source) as file:
        return _decode(file, min_side)


def _decode(fp: BinaryIO, min_side: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(fp)
        if min_side and image.format == "JPEG":
            w, h = image.size
            scale = min_side / max(1, min(w, h))
            if scale < 1:
                image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        image.load()
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (CMYK, L, P, RGBA, I;16, ...) to RGB; alpha goes on white."""
    if image.mode == "RGB":
        return image
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I"):  # 16/32-bit integer: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).astype(np.uint8))
    return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size``, then centre-crop: a ``(size, size, 3)`` uint8
    array, the format of the decoded cache."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_square(source: PathOrBytes, size: int) -> np.ndarray:
    """Decode at reduced scale and return a ``(size, size, 3)`` uint8 centre crop."""
    return resize_square(open_image(source, min_side=size), size)


def reduction_for(size: tuple[int, int], min_side: int) -> int:
    """The largest JPEG reduction (8, 4, 2 or 1) that keeps ``min_side`` on the shorter side."""
    return next((r for r in (8, 4, 2) if min(size) / r >= min_side), 1)


def jpeg_gray(data: bytes, reduction: int = 8) -> tuple[np.ndarray | None, list[str]]:
    """JPEG ``data`` decoded upright in grayscale at 1/``reduction`` scale (None when it cannot
    be), and libjpeg's warnings: the cheapest decode that still reads every byte, so it finds
    truncated and corrupt files."""
    flag = f"IMREAD_REDUCED_GRAYSCALE_{reduction}" if reduction > 1 else "IMREAD_GRAYSCALE"
    with captured_stderr() as messages:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), getattr(cv2, flag))
    return image, messages


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """The lines C libraries write to file descriptor 2 during the block, where libjpeg's
    warnings would flood a notebook. Keep the block to the C call (other threads' writes are
    collected too); a full pipe drops the rest, and without a descriptor 2 nothing breaks."""
    lines: list[str] = []
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    for end in (read_end, write_end):  # never wait on a full pipe, or a child holding it
        os.set_blocking(end, False)
    saved = -1
    try:
        with suppress(OSError):  # no standard error to redirect
            saved = os.dup(2)
        if saved >= 0:
            os.dup2(write_end, 2)
        os.close(write_end)
        write_end = -1
        yield lines
    finally:
        if saved >= 0:
            os.dup2(saved, 2)
            os.close(saved)
        if write_end >= 0:
            os.close(write_end)
        chunks = []
        with suppress(BlockingIOError):
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        os.close(read_end)
        text = b"".join(chunks).decode(errors="replace")
        lines.extend(line.strip() for line in text.splitlines() if line.strip())
