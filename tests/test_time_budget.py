"""TIME_BUDGET: the epochs that fit the minutes given, at the step rate measured on this
machine (here a fake rate: the choice depends only on it), recorded in the run and reused."""

from __future__ import annotations

import logging

import pytest

from catsdogs_helpers import config, runs, training, workflow


def test_the_epochs_that_fit_follow_the_rate_and_the_sizes():
    cfg = config.make_config(EPOCHS=22, TIME_BUDGET=10.0)  # 96 px, from 64 px up
    n_train, n_val = 8000, 1000
    epochs, seconds = workflow.epochs_within(cfg, 160.0, n_train, n_val)
    assert (
        seconds
        <= 600
        < workflow.epochs_within(
            config.make_config(EPOCHS=epochs + 1, TIME_BUDGET=1000.0), 160.0, n_train, n_val
        )[1]
    ), "one more epoch would not fit"
    assert 1 < epochs < 22
    fast, _ = workflow.epochs_within(cfg, 1600.0, n_train, n_val)
    assert fast == 22, "a fast machine gets the recipe's epochs, no more"
    slow, slow_seconds = workflow.epochs_within(cfg, 1.0, n_train, n_val)
    assert slow == 1 and slow_seconds > 600, "below one epoch: one, said to take longer"


def test_the_plan_measures_once_records_its_choice_and_reuses_it(petimages, monkeypatch, caplog):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    measured = []

    def fake_rate(model_name, settings, **kwargs):
        measured.append(kwargs["image_size"])
        return {"run": 20.0}  # images/s: 64 photos of 48 px take 3.2 s an epoch

    monkeypatch.setattr(workflow, "measure_training_speed", fake_rate)
    tiny = {"RUN_NAME": "budget", "IMAGE_SIZE": 48, "NUM_WORKERS": 0, "EPOCHS": 10}
    cfg = config.make_config(TIME_BUDGET=0.25, **tiny)  # 15 s
    with caplog.at_level(logging.INFO, logger="catsdogs_helpers"):
        loaders, planned = workflow.prepare_training(cfg, progress=False)
    n_train, n_val = len(loaders["train"].dataset), len(loaders["val"].dataset)
    expected, _ = workflow.epochs_within(planned, 20.0, n_train, n_val)
    assert planned.epochs == expected and 1 <= expected < 10 and measured == [48]
    assert f"TIME_BUDGET 0.25 min: {expected} of 10 epochs fit at the 20 images/s" in caplog.text
    saved = runs.read_json(cfg.run_dir / "time_budget.json")
    assert saved["epochs"] == expected and saved["images_per_s"] == 20.0
    monkeypatch.setattr(workflow, "measure_training_speed", lambda *a, **k: {"run": 1e6})
    _, again = workflow.prepare_training(cfg, progress=False)
    assert again.epochs == expected, "the choice recorded, not a new measure"
    _, other = workflow.prepare_training(
        config.make_config(TIME_BUDGET=1.0, **tiny), progress=False
    )
    assert other.epochs == 10, "another budget: measured again (a fast machine now)"
    _, unlimited = workflow.prepare_training(config.make_config(**tiny), progress=False)
    assert unlimited.epochs == 10


def test_a_budget_trains_the_epochs_it_chose(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    monkeypatch.setattr(workflow, "measure_training_speed", lambda *a, **k: {"run": 20.0})
    cfg = config.make_config(RUN_NAME="b2", IMAGE_SIZE=40, NUM_WORKERS=0, EPOCHS=6, TIME_BUDGET=0.2)
    _, history = workflow.train_run(cfg, progress=False)
    chosen = runs.read_json(cfg.run_dir / "time_budget.json")["epochs"]
    assert len(history) == chosen < 6
    assert training.load_checkpoint(cfg.run_dir / "last.pt")["settings"]["epochs"] == chosen
    with pytest.raises(config.ParameterError, match="TIME_BUDGET"):
        config.make_config(TIME_BUDGET=-1)
