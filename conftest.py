"""Test-session setup for the notebooks (``pytest --nbval-lax notebooks/``).

Before any notebook kernel starts, this makes a small synthetic PetImages archive, serves it
on 127.0.0.1 and points the notebooks' parameters at it through ``CATSDOGS_*`` variables
(which the kernels inherit): the download, validate, split, train and infer steps all run for
real, at a tiny size, with nothing written into the repository.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

NOTEBOOK_SETTINGS = {
    "RUN_NAME": "nbval",
    "EPOCHS": "1",
    "IMAGE_SIZE": "64",
    "BATCH_SIZE": "32",
    "NUM_WORKERS": "1",
    "LIMIT_PER_CLASS": "0",
    "SEED": "42",
}


def pytest_configure(config) -> None:
    if not (config.getoption("nbval", False) or config.getoption("nbval_lax", False)):
        return
    import fakedata

    stack = contextlib.ExitStack()
    config._catsdogs_stack = stack
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="catsdogs-nbval-")))
    pets = fakedata.make_petimages(work / "source", per_class=60)
    archive = fakedata.zip_folder(pets, work / "pets.zip")
    base, _ = stack.enter_context(fakedata.serve({"/pets.zip": archive.read_bytes()}))
    os.environ["CATSDOGS_DATASET_URL"] = f"{base}/pets.zip"
    os.environ["CATSDOGS_DATA_DIR"] = str(work / "data")
    os.environ["CATSDOGS_RUNS_DIR"] = str(work / "runs")
    os.environ["MPLBACKEND"] = "Agg"
    os.environ.setdefault("CATSDOGS_PROGRESS", "text")  # see catsdogs_helpers/progress.py
    for name, value in NOTEBOOK_SETTINGS.items():
        os.environ[f"CATSDOGS_{name}"] = value


def pytest_unconfigure(config) -> None:
    stack = getattr(config, "_catsdogs_stack", None)
    if stack is not None:
        stack.close()
