"""Progress bars that read well live in Jupyter and in a notebook saved after running unattended.

In a Jupyter front end a widget bar is the nicest, but a notebook executed unattended (by
``python -m catsdogs_helpers.series`` through papermill, or by ``pytest --nbval-lax``) saves
only the widget's plain-text stand-in, drawn once and so frozen at "0%". There a plain-text
bar is better: it is ordinary stream output, and the series runner asks nbclient to
``coalesce_streams``, which merges a cell's stream outputs and keeps only what follows the last
``\\r`` of each line, so the saved notebook shows each bar's final state ("100%|...| 25/25").

The environment variable ``CATSDOGS_PROGRESS`` picks the kind (the kernel inherits it from
whoever starts it; the series runner and the notebook tests set ``text``):

- ``auto`` (the default): ``tqdm.auto``, a widget in Jupyter and text in a terminal;
- ``text``: plain text on stdout, redrawn at most once a second;
- ``off``: no progress bars at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

ENV_VAR = "CATSDOGS_PROGRESS"
MODES = ("auto", "text", "off")
#: Seconds between redraws of a text bar: every redraw is kept in the notebook until the cell
#: ends, so a 20-minute loop at tqdm's default of 0.1 s would pile up 12,000 of them.
TEXT_MININTERVAL = 1.0


def progress_mode() -> str:
    """The kind of bar ``CATSDOGS_PROGRESS`` asks for: ``auto``, ``text`` or ``off``."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}: use one of {', '.join(MODES)}")
    return mode


def progress_bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> text_tqdm:
    """A tqdm bar of the kind ``CATSDOGS_PROGRESS`` asks for; takes tqdm's own arguments.

    Use it as tqdm: ``for batch in progress_bar(loader, desc="epoch 1")`` or
    ``progress_bar(total=n, unit="B")`` with ``update``. ``disable=True`` still turns it off.
    """
    mode = progress_mode()
    if mode == "off":
        tqdm_kwargs["disable"] = True
    if mode == "text":
        tqdm_kwargs.setdefault("file", sys.stdout)
        tqdm_kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        tqdm_kwargs.setdefault("ncols", 100)
        return text_tqdm(iterable, **tqdm_kwargs)
    return auto_tqdm(iterable, **tqdm_kwargs)
