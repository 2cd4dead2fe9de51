"""Reading photos: any format to RGB, upright; JPEGs at 1/2, 1/4 or 1/8 scale inside the
decoder (faster, and still reading every byte), libjpeg's warnings kept out of the notebook."""

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

#: The kernel's own files, never opened as a photo (``/dev/shm``, a RAM disk, is opened).
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
RAM_DISKS = ("/dev/shm",)
#: What a file that is not a regular one is, for the note.
KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotAFile(OSError):
    """A path never opened: a system file or not a regular file; ``info`` is its ``os.stat``."""

    def __init__(self, note: str, info: os.stat_result) -> None:
        super().__init__(note)
        self.info = info


def _under(path: str, folders: tuple[str, ...]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


def file_status(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat`` through links, nothing opened; raises :class:`NotAFile` for a system file or
    anything but a regular file, ``OSError`` when there is none."""
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
    """The regular file ``path`` leads to, opened to read; ``OSError`` if it was replaced
    since :func:`file_status` looked."""
    info = file_status(path)
    file = open(path, "rb", opener=_without_waiting)
    now = os.fstat(file.fileno())
    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
        file.close()
        raise OSError(f"{os.fspath(path)!r} was replaced while it was opened")
    return file


def open_image(source: PathOrBytes, *, min_side: int | None = None) -> Image.Image:
    """Decode a path or bytes to upright RGB, a JPEG at the smallest scale keeping ``min_side``;
    raises Pillow's ``OSError``/``ValueError`` or :class:`NotAFile`."""
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
    """The shorter side resized to ``size``, centre-cropped: a ``(size, size, 3)`` uint8 array."""
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
    """JPEG ``data`` in grayscale at 1/``reduction`` scale (None when it cannot be decoded), and
    libjpeg's warnings."""
    flag = f"IMREAD_REDUCED_GRAYSCALE_{reduction}" if reduction > 1 else "IMREAD_GRAYSCALE"
    with captured_stderr() as messages:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), getattr(cv2, flag))
    return image, messages


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """The lines written to file descriptor 2 during the block (keep it to the C call: other
    threads' writes are caught too); a full pipe drops the rest."""
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
