"""The series runner's own behaviour: the settings its notebook kernels run with."""

from __future__ import annotations

import os
import subprocess
import sys

import fakedata
from catsdogs_helpers import series

TCP_WARNING = "running over TCP without encryption"


def test_series_kernels_run_without_the_tcp_warning(tmp_path, monkeypatch, capfd):
    folder = fakedata.tiny_notebook(tmp_path / "nb", "import sys\nprint('hello', file=sys.stderr)")
    out = series.run_series({"RUN_NAME": "quiet"}, notebooks_dir=folder)
    saved = (out / "01_tiny.ipynb").read_text()
    assert "hello" in saved and TCP_WARNING not in saved
    captured = capfd.readouterr()  # the kernel's own stderr comes to this terminal
    assert TCP_WARNING not in captured.err + captured.out


def test_nbval_kernels_show_no_tcp_warning(tmp_path):
    """``pytest --nbval-lax`` sends its kernels' stderr, and so the warning, to os.devnull."""
    fakedata.tiny_notebook(tmp_path, "print('hello')")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-s",
         "-p", "no:cacheprovider", "01_tiny.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert TCP_WARNING not in done.stdout + done.stderr


def test_kernel_environment_adds_only_what_is_missing(monkeypatch):
    monkeypatch.setenv("CATSDOGS_PROGRESS", "off")
    monkeypatch.delenv("CATSDOGS_SOMETHING", raising=False)
    with series.kernel_environment({"CATSDOGS_PROGRESS": "text", "CATSDOGS_SOMETHING": "1"}):
        assert os.environ["CATSDOGS_PROGRESS"] == "off"
        assert os.environ["CATSDOGS_SOMETHING"] == "1"
    assert "CATSDOGS_SOMETHING" not in os.environ and os.environ["CATSDOGS_PROGRESS"] == "off"
