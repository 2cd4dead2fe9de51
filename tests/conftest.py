from __future__ import annotations

from pathlib import Path

import pytest

import fakedata

REPO = Path(__file__).resolve().parent.parent
DEV_ZIP = REPO.parent / "shared" / "data" / "catsdogs-dev-10k.zip"


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path, monkeypatch):
    """Every test writes under its own temporary folder, never into the repository."""
    for key in list(__import__("os").environ):
        if key.startswith("CATSDOGS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def petimages(tmp_path) -> Path:
    """A small synthetic PetImages folder with the archive's kinds of broken files."""
    return fakedata.make_petimages(tmp_path / "source", per_class=40)


@pytest.fixture
def dev_zip() -> Path:
    if not DEV_ZIP.is_file():
        pytest.skip(f"{DEV_ZIP} is not here (the real 10k subset, present in CI and dev)")
    return DEV_ZIP
