"""Reading photos: any format to RGB, upright, and at reduced scale when that is all we need.

JPEG files can be decoded at 1/2, 1/4 or 1/8 scale inside the decoder (Pillow's ``draft``),
which is several times faster than a full decode followed by a resize. Pillow also keeps
libjpeg's "Corrupt JPEG data" warnings out of the notebook.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

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


def dhash(image: Image.Image, size: int = 16) -> str:
    """A 256-bit difference hash (hex): which of each pair of neighbouring pixels of a tiny
    grayscale copy is brighter. The same photo re-encoded or resized lands a few bits away;
    different photos land dozens of bits away."""
    small = np.asarray(
        image.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16
    )
    return np.packbits(small[:, 1:] > small[:, :-1]).tobytes().hex()


def jpeg_decoder_warnings(data: bytes) -> list[str]:
    """What libjpeg prints while decoding ``data`` (at 1/8 scale, through OpenCV).

    libjpeg writes "Corrupt JPEG data: ..." straight to the process's standard error, where it
    floods a notebook. Here it is captured into a list instead, so the validation report can
    count the warnings per file.
    """
    import cv2

    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]
