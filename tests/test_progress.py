"""Progress bars: the kind ``CATSDOGS_PROGRESS`` asks for, and what a notebook executed by the
series runner keeps of them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pytest
from tqdm.std import tqdm as text_tqdm

import fakedata
from catsdogs_helpers import plumbing
from catsdogs_helpers.tools import series

REPO = Path(__file__).resolve().parent.parent


def test_text_mode_is_a_plain_tqdm_that_ends_at_100_percent(monkeypatch):
    monkeypatch.setenv("CATSDOGS_PROGRESS", "text")
    out = io.StringIO()
    with plumbing.progress_bar(range(7), desc="work", file=out) as bar:
        assert type(bar) is text_tqdm
        for _ in bar:
            pass
    assert "work: 100%" in out.getvalue() and "7/7" in out.getvalue()


def test_off_mode_and_disable_draw_nothing(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("CATSDOGS_PROGRESS", "off")
    assert list(plumbing.progress_bar(range(3), file=out)) == [0, 1, 2]
    monkeypatch.setenv("CATSDOGS_PROGRESS", "text")
    assert list(plumbing.progress_bar(range(3), file=out, disable=True)) == [0, 1, 2]
    assert out.getvalue() == ""


def test_unknown_mode_says_which_are_known(monkeypatch):
    monkeypatch.setenv("CATSDOGS_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="CATSDOGS_PROGRESS='fancy': use one of auto, text, off"):
        plumbing.progress_bar(range(3))


def test_series_runner_saves_bars_in_their_final_state(tmp_path, monkeypatch):
    """Through run_series (papermill, nbclient): text on stdout, coalesced, at 100%."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout
    code = (
        "import time\n"
        "from catsdogs_helpers.plumbing import progress_bar\n"
        "print('before')\n"
        "for _ in progress_bar(range(25), desc='work', mininterval=0.05):\n"
        "    time.sleep(0.02)\n"
        "print('after')\n"
    )
    folder = fakedata.tiny_notebook(tmp_path / "nb", code)
    out = series.run_series({"RUN_NAME": "bars"}, notebooks_dir=folder)
    outputs = nbformat.read(out / "01_tiny.ipynb", as_version=4).cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream"], json.dumps(outputs)
    lines = outputs[0].text.splitlines()
    assert lines[0] == "before" and lines[-1] == "after"
    assert lines[1].startswith("work: 100%|") and lines[1].endswith("it/s]"), lines
    assert "0%|" not in outputs[0].text.replace("100%|", "") and "\r" not in outputs[0].text
