"""Whole-series runs with papermill: a notebook on its own in a fresh kernel, and all five on
the real 10k photos served over loopback (when ../shared/data holds them)."""

from __future__ import annotations

import json
import os
import re

import pytest

import fakedata
from catsdogs_helpers import config, evaluation, runs, training, workflow
from catsdogs_helpers.tools import series

REQUIRED_METRICS = {"test_accuracy", "test_f1", "test_roc_auc", "n_test", "epochs_run",
                    "train_seconds", "settings"}  # fmt: skip


def test_notebook_05_runs_alone_in_a_fresh_kernel(tmp_path, petimages, monkeypatch):
    """Colab users open a late notebook first: 05 downloads, validates, splits and trains."""
    archive = fakedata.zip_folder(petimages, tmp_path / "pets.zip")
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "fresh-data"))
    with fakedata.serve({"/pets.zip": archive.read_bytes()}) as (base, handler):
        out = series.run_series(
            {"DATASET_URL": f"{base}/pets.zip", "RUN_NAME": "alone", "EPOCHS": 1,
             "IMAGE_SIZE": 48, "BATCH_SIZE": 16, "NUM_WORKERS": 0},
            only=["05"],
        )  # fmt: skip
        assert len(handler.requests) == 1
    run = config.run_dir("alone")
    assert (out / "05_infer.ipynb").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert REQUIRED_METRICS <= set(metrics)
    assert metrics["settings"]["image_size"] == 48 and metrics["epochs_run"] == 1
    assert (run / "predictions-my_photos.csv").is_file() and (run / "best.pt").is_file()


def test_notebook_05_stops_on_a_run_trained_with_other_settings(petimages, monkeypatch):
    """05 on an existing run with other parameters stops as 04 does; nothing is rewritten."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    tiny = {"RUN_NAME": "kept", "IMAGE_SIZE": 48, "NUM_WORKERS": 0}
    cfg = config.make_config(EPOCHS=1, **tiny)
    _, history = workflow.train_run(cfg, progress=False)
    settings = training.load_checkpoint(cfg.run_dir / "best.pt")["settings"]
    runs.write_metrics(cfg.run_dir, {"accuracy": 0.5, "n": 10}, settings)
    before = {p.name: p.read_bytes() for p in cfg.run_dir.iterdir() if p.is_file()}
    with pytest.raises(series.NotebookFailed, match="RunConflict"):
        series.run_series({"EPOCHS": 2, **tiny}, only=["05"])
    after = {p.name: p.read_bytes() for p in cfg.run_dir.iterdir() if p.is_file()}
    assert after == before


def test_series_on_the_real_photos(tmp_path, dev_zip, monkeypatch):
    """All five notebooks on the real 10k subset, downloaded over loopback: above chance."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "data"))
    with fakedata.serve({"/catsdogs-dev-10k.zip": dev_zip.read_bytes()}) as (base, _):
        series.run_series(
            {"DATASET_URL": f"{base}/catsdogs-dev-10k.zip", "RUN_NAME": "real",
             "LIMIT_PER_CLASS": 1500, "EPOCHS": 6, "IMAGE_SIZE": 64, "NUM_WORKERS": 0},
        )  # fmt: skip
    run = config.run_dir("real")
    metrics = json.loads((run / "metrics.json").read_text())
    assert REQUIRED_METRICS <= set(metrics)
    assert metrics["n_test"] == 300
    low, _ = evaluation.accuracy_interval(metrics["test_accuracy"], metrics["n_test"])
    assert low > 0.5, f"test accuracy {metrics['test_accuracy']:.3f} is not above chance"
    assert sorted(os.listdir(run / "notebooks")) == [p.name for p in series.notebook_paths()]


@pytest.mark.parametrize(
    ("parameters", "environ", "message"),
    [
        ({"MODEL_NAME": "nope"}, {}, "MODEL_NAME='nope' (given with -p) is not valid: use one of"),
        ({"BATCH_SIZE": "abc"}, {}, "BATCH_SIZE='abc' (given with -p) is not valid: use a whole"),
        ({}, {"CATSDOGS_EPOCHS": "many"}, "EPOCHS='many' (from CATSDOGS_EPOCHS) is not valid"),
        ({"EPOCH": 3}, {}, "EPOCH is not a parameter of this series (did you mean EPOCHS?)"),
        ({"PREDICT_PATH": "x"}, {}, "PREDICT_PATH is a parameter of no notebook run here"),
    ],
)
def test_series_runner_checks_every_parameter_before_the_first_notebook(
    parameters, environ, message, monkeypatch
):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(config.ParameterError, match=re.escape(message)):
        series.run_series({"RUN_NAME": "bad", **parameters}, only=["01", "02", "04"])
    assert not config.run_dir("bad").exists(), "nothing ran"


def test_series_command_prints_the_problem_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as stop:
        series.main(["-p", "BATCH_SIZE", "abc", "--only", "04"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: BATCH_SIZE='abc' (given with -p)") and "Traceback" not in err


def test_the_runner_takes_a_recipe_file_and_p_values_win(petimages, monkeypatch, capsys):
    """``-f recipes/tutorial.yaml``: the tutorial's recipe through the series runner (notebook
    04 at a tiny size: 48 px, one epoch); a ``-p`` value wins over the file."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    tiny = ["-p", "IMAGE_SIZE", "48", "-p", "EPOCHS", "1", "-p", "NUM_WORKERS", "0"]
    series.main(["-f", "recipes/tutorial.yaml", *tiny, "--only", "04"])
    settings = runs.read_json(config.run_dir("tutorial") / "summary.json")["settings"]
    assert (settings["model_name"], settings["optimizer"], settings["schedule"]) == (
        "resnet50",
        "adam",
        "plateau",
    )
    assert settings["cache_size"] == 60 and settings["epochs"] == 1, "RESIZE_RATIO 1.25; -p wins"
    assert settings["parts"]["scheduler_class"] == "ReduceLROnPlateau"
    assert (
        "RandomBrightnessContrast" in runs.runs_table().set_index("run").loc["tutorial", "pipeline"]
    )
    with pytest.raises(SystemExit):
        series.main(["-f", "recipes/nonesuch.yaml", "--only", "04"])
    assert "nonesuch.yaml cannot be read" in capsys.readouterr().err
