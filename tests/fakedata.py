"""Data the tests make themselves: a small, learnable "PetImages" folder and zip, with the
kinds of broken files the real archive holds, and a loopback HTTP server that can resume,
ignore ranges or drop the connection."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

#: Background colour of each synthetic class: warm, cool, green.
BASES = ([200, 120, 60], [60, 120, 200], [90, 190, 80])


def photo(label: int, rng: np.random.Generator, size=(200, 150)) -> Image.Image:
    """A synthetic photo: warm background with a disc for class 0, cool with a bar for 1,
    green with an upright bar for 2."""
    w, h = size
    base = np.array(BASES[label], dtype=float)
    img = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255)
    yy, xx = np.mgrid[:h, :w]
    cx, cy = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4)
    if label == 0:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (min(w, h) // 4) ** 2
    elif label == 1:
        mask = (abs(xx - cx) < w // 5) & (abs(yy - cy) < h // 10)
    else:
        mask = (abs(xx - cx) < w // 10) & (abs(yy - cy) < h // 4)
    img[mask] = 255 - img[mask]
    return Image.fromarray(img.astype(np.uint8))


def scene(seed: int, size=(500, 375)) -> Image.Image:
    """A smooth random scene with some grain: structured like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    big = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=float)
    return Image.fromarray(np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **{"quality": 85, **kwargs})
    return out.getvalue()


def make_petimages(
    root: Path, per_class: int = 60, classes=("Cat", "Dog"), seed: int = 0, broken: bool = True
) -> Path:
    """Write ``root/PetImages/<class>/<n>.jpg`` (up to three classes that look different);
    with ``broken``, add the archive's kinds of bad files. Returns the ``PetImages`` folder."""
    rng = np.random.default_rng(seed)
    pets = root / "PetImages"
    for label, name in enumerate(classes):
        folder = pets / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{i}.jpg").write_bytes(_jpeg(label % len(BASES), rng))
    if broken:
        cat, dog = pets / classes[0], pets / classes[1]
        good = (cat / "0.jpg").read_bytes()
        (cat / "empty.jpg").write_bytes(b"")
        (cat / "truncated.jpg").write_bytes(good[: len(good) // 2])
        (cat / "html.jpg").write_bytes(b"<html><body>404 Not Found</body></html>")
        (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(500))
        (cat / "tiny.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (1, 1))))
        png = io.BytesIO()
        photo(0, rng).save(png, "PNG")
        (cat / "png_inside.jpg").write_bytes(png.getvalue())
        (dog / "cmyk.jpg").write_bytes(jpeg_bytes(photo(1, rng).convert("CMYK")))
        (dog / "gray.jpg").write_bytes(jpeg_bytes(photo(1, rng).convert("L")))
        (dog / "same_as_cat_0.jpg").write_bytes(good)  # one photo under both classes
    return pets


def _jpeg(label: int, rng: np.random.Generator) -> bytes:
    size = (int(rng.integers(160, 260)), int(rng.integers(120, 200)))
    return jpeg_bytes(photo(label, rng, size))


def write_photos(folder: Path, names: dict[str, int], seed: int = 0) -> Path:
    """Write ``folder/<name>`` for each ``{name: class index}`` (names may hold sub-folders);
    returns ``folder``."""
    rng = np.random.default_rng(seed)
    for name, label in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_jpeg(label, rng))
    return folder


def make_named(folder: Path, per_class: int = 15, classes=("cat", "dog"), seed: int = 0) -> Path:
    """A flat folder labelled by file name, as Kaggle's ``train/``: ``cat.0.jpg``,
    ``dog.0.jpg`` and so on; returns ``folder``."""
    names = {f"{name}.{i}.jpg": label for label, name in enumerate(classes)
             for i in range(per_class)}  # fmt: skip
    return write_photos(folder, names, seed)


def make_csv_labelled(
    folder: Path, per_class: int = 15, classes=("cat", "dog"), seed: int = 0
) -> Path:
    """Photos with names that say nothing (``img/<k>/<n>.jpg``) and ``labels.csv`` beside
    them (columns ``path``, ``label`` and an extra one); returns ``folder``."""
    names = {f"img/{i % 3}/{label * per_class + i:04d}.jpg": label
             for label in range(len(classes)) for i in range(per_class)}  # fmt: skip
    write_photos(folder, names, seed)
    rows = [f"{name},{classes[label]},camera {label}" for name, label in names.items()]
    (folder / "labels.csv").write_text("path,label,source\n" + "\n".join(rows) + "\n")
    return folder


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` (keeping its name as the top-level entry)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes | int] = {}
    ranges = True
    drop_after: int | None = None  # bytes sent before the first response is cut
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.files.get(self.path)
        self.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if data is None or isinstance(data, int):
            self.send_error(data or 404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.ranges:
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).drop_after
        if cut is not None:
            type(self).drop_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@contextmanager
def _serving(handler: type):
    """``handler`` served on 127.0.0.1 from a thread while the block runs; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve(files: dict[str, bytes | int], *, ranges: bool = True, drop_after: int | None = None):
    """Serve ``{"/name": bytes}`` on 127.0.0.1; yields ``(base_url, handler_class)``.

    A value that is an ``int`` is an HTTP error status to answer with (e.g. 500); any other
    path answers 404."""
    handler = type("Handler", (_Handler,), {
        "files": files, "ranges": ranges, "drop_after": drop_after, "requests": [],
    })  # fmt: skip
    with _serving(handler) as base:
        yield base, handler


def tiny_notebook(folder: Path, code: str, name: str = "01_tiny.ipynb") -> Path:
    """Write ``folder/<name>``, a notebook of one code cell, for the series runner; returns
    ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, folder / name)
    return folder


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``respond(handler)``: a server that misbehaves as a test says."""

    requests: list[dict] = []
    stopped: threading.Event

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def respond(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.requests.append({"path": self.path, "range": self.headers.get("Range")})
        try:
            self.respond()
        except OSError:  # the client hung up: what these servers are there to make it do
            pass


@contextmanager
def serve_scripted(respond):
    """Serve every GET on 127.0.0.1 with ``respond(handler)``, a function of the
    ``BaseHTTPRequestHandler``, whose ``stopped`` (an Event) is set when the block ends;
    yields ``(base_url, handler_class)``."""
    handler = type("Scripted", (_Scripted,), {
        "respond": respond, "requests": [], "stopped": threading.Event(),
    })  # fmt: skip
    try:
        with _serving(handler) as base:
            yield base, handler
    finally:
        handler.stopped.set()


def endless_stream(total: int = 64 * 1024**2):
    """A responder that answers 200 with no Content-Length and streams zeros until the client
    hangs up: "forever" to a client (``total`` bytes at most, so that a client that never
    stops fills no disk)."""

    def respond(handler) -> None:
        handler.send_response(200)
        handler.end_headers()
        chunk, sent = bytes(64 * 1024), 0
        while sent < total and not handler.stopped.is_set():
            handler.wfile.write(chunk)
            sent += len(chunk)

    return respond


def goes_silent(handler) -> None:
    """A responder that sends its headers (a Content-Length of 1 MB) and 100 bytes, then
    nothing until the serving block ends."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(1024**2))
    handler.end_headers()
    handler.wfile.write(bytes(100))
    handler.wfile.flush()
    handler.stopped.wait(120)


def wrong_ranges(data: bytes, offset: int):
    """A responder for ``data`` that answers a Range request with 206 and a true
    Content-Range, but from byte ``offset`` whatever was asked; a plain request with 200."""

    def respond(handler) -> None:
        start = offset if handler.headers.get("Range") else 0
        body = data[start:]
        handler.send_response(206 if handler.headers.get("Range") else 200)
        if handler.headers.get("Range"):
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond
