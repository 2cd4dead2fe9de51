"""The series runner's own behaviour: kernel settings, and epoch lines while training runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fakedata
from catsdogs_helpers.plumbing import atomic_path
from catsdogs_helpers.tools import series

TCP_WARNING = "running over TCP without encryption"
COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


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


def test_kernels_get_text_bars_unless_set_and_every_parameter(monkeypatch):
    monkeypatch.delenv("CATSDOGS_PROGRESS", raising=False)
    assert series.kernel_variables({"EPOCHS": 3}) == {
        "CATSDOGS_PROGRESS": "text", "CATSDOGS_EPOCHS": "3"
    }  # fmt: skip
    monkeypatch.setenv("CATSDOGS_PROGRESS", "off")
    monkeypatch.setenv("CATSDOGS_EPOCHS", "9")
    variables = series.kernel_variables({"EPOCHS": 3})
    assert variables == {"CATSDOGS_EPOCHS": "3"}, "a -p value wins over the environment"
    with series.environment(variables):
        assert os.environ["CATSDOGS_EPOCHS"] == "3" and os.environ["CATSDOGS_PROGRESS"] == "off"
    assert os.environ["CATSDOGS_EPOCHS"] == "9", "restored after the block"


def _write_history(run: Path, rows: list[dict]) -> None:
    """As training does: the whole file, written beside it and renamed."""
    with atomic_path(run / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _row(epoch: int, train_acc: float, val_acc: float, seconds: float) -> dict:
    return {"epoch": epoch, "train_loss": 0.5, "train_acc": train_acc, "val_loss": 0.4,
            "val_acc": val_acc, "lr": 1e-3, "seconds": seconds}  # fmt: skip


def _printed_within(capsys, seconds: float) -> str:
    """What is printed first, waiting up to ``seconds`` for it (and a little for more)."""
    deadline = time.monotonic() + seconds
    out = ""
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
        out = capsys.readouterr().out
    time.sleep(0.2)
    return out + capsys.readouterr().out


def test_watch_history_prints_one_line_per_new_epoch_then_stops(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write_history(run, [_row(1, 0.6, 0.65, 20.2)])  # from an earlier session: not repeated
    rows = [_row(1, 0.6, 0.65, 20.2), _row(2, 0.7512, 0.8, 19.6)]
    with series.watch_history(run, interval=0.05):
        _write_history(run, rows)
        assert _printed_within(capsys, 5.0) == "   epoch 2: train acc 0.751, val acc 0.800, 20 s\n"
        rows.append(_row(3, 0.812, 0.845, 21.0))
        _write_history(run, rows)  # just before the notebook ends: the last look finds it
    assert capsys.readouterr().out == "   epoch 3: train acc 0.812, val acc 0.845, 21 s\n"
    assert not [t for t in threading.enumerate() if t.name == "watch-history"]
    _write_history(run, [*rows, _row(4, 0.9, 0.9, 20)])
    time.sleep(0.2)
    assert capsys.readouterr().out == "", "nothing is printed once the block has ended"


def test_watch_history_starts_over_when_training_does(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write_history(run, [_row(1, 0.6, 0.65, 20), _row(2, 0.7, 0.75, 20)])
    with series.watch_history(run, interval=10):  # only the last look
        (run / "history.csv").unlink()  # OVERWRITE=True removes the old history
        _write_history(run, [_row(1, 0.55, 0.6, 22)])
    assert capsys.readouterr().out == "   epoch 1: train acc 0.550, val acc 0.600, 22 s\n"


def test_watch_history_without_a_history_prints_nothing(tmp_path, capsys):
    with series.watch_history(tmp_path / "none", interval=0.01):
        time.sleep(0.05)
    assert capsys.readouterr().out == ""


def test_a_failing_notebook_is_one_line_and_its_traceback_waits_in_the_copy(
    tmp_path, monkeypatch, capsys
):
    folder = fakedata.tiny_notebook(tmp_path / "nb", "raise ZeroDivisionError('no photos here')")
    monkeypatch.setattr(series, "notebook_paths", lambda _=None: sorted(folder.glob("*.ipynb")))
    with pytest.raises(SystemExit) as stopped:
        series.main(["-p", "RUN_NAME", "fails"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: 01_tiny.ipynb stopped: ZeroDivisionError: no photos here"
    assert len(err) == 2 and "--debug" in err[1] and "Traceback" not in "\n".join(err)
    executed = Path(err[1].split("its traceback is in ")[1].split(" (or")[0])
    assert "ZeroDivisionError" in executed.read_text(), "the traceback, in the executed copy"
    with pytest.raises(series.NotebookFailed):
        series.main(["-p", "RUN_NAME", "fails", "--debug"])


def test_a_second_series_keeps_the_executed_notebooks_of_the_first(tmp_path):
    folder = fakedata.tiny_notebook(tmp_path / "nb", "print('first')")
    out = series.run_series({"RUN_NAME": "twice"}, notebooks_dir=folder)
    fakedata.tiny_notebook(folder, "print('second')")
    assert series.run_series({"RUN_NAME": "twice"}, notebooks_dir=folder) == out
    assert "second" in (out / "01_tiny.ipynb").read_text()
    (kept,) = (out / "earlier").glob("*/01_tiny.ipynb")
    assert "first" in kept.read_text()


def test_the_end_of_a_series_says_what_it_gave(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "history.png").write_bytes(b"png")
    metrics = {"test_accuracy": 0.9512, "n_test": 1000, "epochs_run": 6, "train_seconds": 90}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert series.summary_lines(run) == [
        "test accuracy 95.12% on 1000 photos (6 epochs, 1.5 min of training)",
        f"run folder: {run}",
        f"figure: {run / 'figures' / 'history.png'}",
    ]
    assert series.summary_lines(tmp_path / "untrained") == [f"run folder: {tmp_path / 'untrained'}"]
