"""Widgets: try the model on a photo of yours (needs a front end; papermill passes a path)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .config import is_colab
from .plumbing import atomic_path

log = logging.getLogger(__name__)


def uploaded_files(value: object) -> list[dict]:
    """A ``FileUpload`` value (ipywidgets 8's tuple or 7's dict) as ``[{"name", "content"}]``."""
    if isinstance(value, dict):
        return [{"name": name, "content": item["content"]} for name, item in value.items()]
    return list(value)


def _save_upload(item: dict, folder: Path) -> Path:
    """Write one uploaded file into ``folder`` under its own name (no folders from it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (Path(str(item["name"])).name or "upload")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(item["content"]))
    return path


def photo_upload(on_photo: Callable[[Path], object], folder: str | Path) -> object | None:
    """An upload button running ``on_photo(path)`` on each photo saved into ``folder`` (its
    ``ValueError`` shown as a message); None without ``ipywidgets``."""
    try:
        import ipywidgets
    except ImportError:
        log.info("no ipywidgets here: call the function on a path instead")
        return None
    if is_colab() and int(ipywidgets.__version__.split(".")[0]) >= 8:
        from google.colab import output  # Colab shows ipywidgets 8 through this manager

        output.enable_custom_widget_manager()
    upload = ipywidgets.FileUpload(accept="image/*", multiple=False, description="Your photo")
    shown = ipywidgets.Output()

    def handle(change: dict) -> None:
        shown.clear_output()
        with shown:  # anything else the callback prints shows under the button too
            for item in uploaded_files(change["new"]):
                try:
                    result = on_photo(_save_upload(item, Path(folder)))
                except ValueError as err:
                    shown.append_stdout(f"{err}\n")
                    continue
                if result is not None:  # a figure made in a callback is not shown by itself
                    shown.append_display_data(result)

    upload.observe(handle, names="value")
    return ipywidgets.VBox([upload, shown])
