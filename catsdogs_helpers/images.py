"""Reading photos: any format to RGB, upright, and at reduced scale when that is all we need.

JPEG files can be decoded at 1/2, 1/4 or 1/8 scale inside the decoder (Pillow's ``draft``,
OpenCV's ``IMREAD_REDUCED_*``), which is several times faster than a full decode followed by
a resize: the decoder still reads every byte of the compressed data, but skips most of the
arithmetic. libjpeg's "Corrupt JPEG data" warnings are kept out of the notebook.
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (a "decompression bomb" header).
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

PathOrBytes = str | os.PathLike[str] | bytes


def open_image(source: PathOrBytes, *, min_side: int | None = None) -> Image.Image:
    """Decode ``source`` (a path or the file's bytes) to an upright RGB image.

    With ``min_side``, JPEGs are decoded at the smallest built-in scale whose shorter side
    is still at least ``min_side``. Raises ``OSError``/``ValueError`` subclasses from Pillow
    on anything that is not a complete, decodable image.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(fp)
        if min_side and image.format == "JPEG":
            w, h = image.size
            scale = min_side / max(1, min(w, h))
            if scale < 1:
                image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        image.load()
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


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
    """Resize so the shorter side is ``size``, then centre-crop to ``size`` x ``size``.

    Returns a ``(size, size, 3)`` uint8 array, the format of the decoded cache.
    """
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_square(source: PathOrBytes, size: int) -> np.ndarray:
    """Decode at reduced scale and return a ``(size, size, 3)`` uint8 centre crop."""
    return resize_square(open_image(source, min_side=size), size)


_GRAY_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def reduction_for(size: tuple[int, int], min_side: int) -> int:
    """The largest JPEG reduction (8, 4, 2 or 1) that keeps the shorter side of an image of
    ``size`` (width, height) at ``min_side`` pixels or more."""
    return next((r for r in (8, 4, 2) if min(size) / r >= min_side), 1)


def jpeg_gray(data: bytes, reduction: int = 8) -> tuple[np.ndarray | None, list[str]]:
    """Decode JPEG ``data`` in grayscale at 1/``reduction`` scale (1, 2, 4 or 8), upright
    (EXIF orientation applied), and return it with the warnings libjpeg printed.

    This is the cheapest decode that still runs every byte of the compressed data through
    the decoder, so it finds truncated and corrupt files. The image is ``None`` when the
    data cannot be decoded at all. The warnings ("Premature end of JPEG file", "Corrupt
    JPEG data: ...") are captured, not printed.
    """
    with captured_stderr() as messages:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _GRAY_FLAGS[reduction])
    return image, messages


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what C libraries write to standard error during the block, one line per item.

    libjpeg writes "Corrupt JPEG data: ..." straight to the process's file descriptor 2,
    past Python, where it floods a notebook. Inside this block it goes to a pipe instead,
    and the yielded list holds its lines when the block ends. Keep the block to the C call:
    whatever other threads write to standard error meanwhile is collected too. libjpeg
    prints only the first warning of each image, so the pipe never fills; if something
    did fill it, the rest would be dropped rather than block. Without a file descriptor 2
    to borrow, nothing is captured and nothing breaks.
    """
    lines: list[str] = []
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = -1
    try:
        try:
            saved = os.dup(2)
        except OSError:
            pass  # no standard error to redirect
        if saved >= 0:
            os.set_blocking(write_end, False)
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
        os.set_blocking(read_end, False)  # a child process may still hold the pipe open
        chunks = []
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        text = b"".join(chunks).decode(errors="replace")
        lines.extend(line.strip() for line in text.splitlines() if line.strip())
