"""The run folder: what identifies a run, and work that is never silently replaced."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from catsdogs_helpers import runs

SETTINGS = {
    **{"seed": 42, "limit_per_class": 0, "image_size": 96, "cache_size": 110, "epochs": 22},
    **{"batch_size": 128, "step": "s", "run_name": "a", "augment": "light"},
    "parts": {"optimizer_class": "SGD", "scheduler_class": "OneCycleLR"},
    "train_pipeline": {"transforms": [{"__class_fullname__": "RandomCrop", "height": 96}]},
}
METRICS = {"accuracy": 0.9, "f1": 0.9, "n": 100}


@pytest.fixture
def run_dir(tmp_path):
    pd.DataFrame({"epoch": [1, 2], "val_acc": [0.8, 0.9], "seconds": [1.0, 2.0]}).to_csv(
        tmp_path / "history.csv", index=False
    )
    return tmp_path


def test_identity_ignores_where_and_how_a_run_is_watched(tmp_path):
    run_dir = tmp_path
    moved = {**SETTINGS, "run_name": "b", "data_dir": "/elsewhere", "num_workers": 4}
    assert runs.differences(SETTINGS, moved) == {}
    longer = {**SETTINGS, "epochs": 30, "parts": {**SETTINGS["parts"], "scheduler_class": "X"}}
    assert runs.differences(SETTINGS, longer) == {
        "epochs": (22, 30),
        "scheduler_class": ("OneCycleLR", "X"),
    }
    flip = {"__class_fullname__": "HorizontalFlip", "p": 0.5}
    flipped = {"transforms": [*SETTINGS["train_pipeline"]["transforms"], flip]}
    other = {**SETTINGS, "augment": "my.json", "train_pipeline": flipped}
    assert set(runs.differences(SETTINGS, other)) == {"train_pipeline"}, (
        "the pipeline, not its name"
    )
    with pytest.raises(
        runs.RunConflict,
        match=r"train_pipeline: \[RandomCrop\] then, \[RandomCrop, HorizontalFlip\] now",
    ):
        runs.check_same_settings(run_dir, SETTINGS, other, "a training run")


def test_metrics_are_written_again_only_when_nothing_differs(run_dir):
    path = runs.write_metrics(run_dir, METRICS, SETTINGS)
    payload = json.loads(path.read_text())
    assert payload["test_accuracy"] == 0.9 and payload["n_test"] == 100
    assert payload["epochs_run"] == 2 and payload["train_seconds"] == 3.0
    runs.write_metrics(run_dir, METRICS, SETTINGS)  # the same again: fine
    other = {**SETTINGS, "epochs": 10}
    with pytest.raises(runs.RunConflict, match="epochs: 22 then, 10 now"):
        runs.write_metrics(run_dir, METRICS, other)
    with pytest.raises(runs.RunConflict, match="test_accuracy differ"):
        runs.write_metrics(run_dir, {**METRICS, "accuracy": 0.8}, SETTINGS)
    assert json.loads(path.read_text()) == payload, "nothing was replaced"
    runs.write_metrics(run_dir, {**METRICS, "accuracy": 0.8}, other, overwrite=True)
    assert json.loads(path.read_text())["test_accuracy"] == 0.8


def test_a_metric_that_is_nan_is_written_again_without_a_conflict(run_dir):
    """A test split without both classes has no ROC AUC (NaN): the same results again are
    the same results."""
    no_auc = {**METRICS, "roc_auc": float("nan")}
    runs.write_metrics(run_dir, no_auc, SETTINGS)
    runs.write_metrics(run_dir, no_auc, SETTINGS)
    with pytest.raises(runs.RunConflict, match="test_roc_auc"):
        runs.write_metrics(run_dir, {**METRICS, "roc_auc": 0.7}, SETTINGS)
