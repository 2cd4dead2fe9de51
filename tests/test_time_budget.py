"""TIME_BUDGET: the epochs that fit the minutes given, at the step rate measured on this
machine (here a fake rate: the choice depends only on it), recorded in the run and reused."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from catsdogs_helpers import config, runs, training, transforms, workflow


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


def test_from_scratch_the_plan_trades_the_side_for_epochs():
    cfg = config.make_config(EPOCHS=22, TIME_BUDGET=7.0)  # 96 px
    assert workflow.budget_sides(cfg) == [96, 88, 80, 72, 64]
    n_train, n_val = 8000, 1000
    side, epochs, seconds = workflow.side_and_epochs(cfg, 130.0, n_train, n_val)
    at_full, _ = workflow.epochs_within(cfg, 130.0, n_train, n_val)
    assert side == 64 and at_full < epochs <= 22 and seconds <= 420, "smaller, more epochs"
    assert workflow.side_and_epochs(cfg, 130.0, n_train, n_val, shrink=False)[:2] == (96, at_full)
    side, epochs, _ = workflow.side_and_epochs(cfg, 260.0, n_train, n_val)
    assert epochs == 22 and 64 < side < 96, "the largest side at which all the epochs fit"
    assert workflow.epochs_within(cfg, 260.0, n_train, n_val, side + 8)[0] < 22
    assert workflow.side_and_epochs(cfg, 1e5, n_train, n_val)[:2] == (96, 22), "fast: as asked"
    pretrained = config.make_config(
        MODEL_NAME="efficientnet_lite0", PRETRAINED=True, IMAGE_SIZE=192, TIME_BUDGET=0.1
    )
    assert workflow.side_and_epochs(pretrained, 10.0, n_train, n_val)[0] == 192, "keeps its side"


def _counts(cfg) -> tuple[int, int]:
    counts = workflow.ensure_split(cfg, progress=False)["split"].value_counts()
    return int(counts["train"]), int(counts["val"])


def test_the_plan_measures_once_records_its_choice_and_reuses_it(petimages, monkeypatch, caplog):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    measured = []

    def fake_rate(model_name, settings, **kwargs):
        measured.append(kwargs["image_size"])
        return {"run": 20.0}  # images/s: 64 photos of 48 px take 3.2 s an epoch

    monkeypatch.setattr(workflow, "measure_training_speed", fake_rate)
    tiny = {"RUN_NAME": "budget", "IMAGE_SIZE": 48, "NUM_WORKERS": 0, "EPOCHS": 10}
    cfg = config.make_config(TIME_BUDGET=0.2, **tiny)  # 12 s
    with caplog.at_level(logging.INFO, logger="catsdogs_helpers"):
        loaders, planned = workflow.prepare_training(cfg, progress=False)
    n_train, n_val = _counts(cfg)
    side, expected, _ = workflow.side_and_epochs(cfg, 20.0, n_train, n_val)
    assert (planned.epochs, planned.image_size) == (expected, side) and measured == [48]
    assert 1 <= expected < 10 and side == 32, "not even 32 px fits all ten epochs"
    assert f"TIME_BUDGET 0.2 min: {expected} of 10 epochs fit at 32 px" in caplog.text
    images, _ = next(iter(loaders["train"]))
    assert images.shape[1:3] == (32, 32), "the loaders crop at the side chosen"
    assert loaders["val"].dataset.size == planned.cache_size == 37
    saved = runs.read_json(cfg.run_dir / "time_budget.json")
    assert (saved["epochs"], saved["image_size"], saved["images_per_s"]) == (expected, 32, 20.0)
    monkeypatch.setattr(workflow, "measure_training_speed", lambda *a, **k: {"run": 1e6})
    _, again = workflow.prepare_training(cfg, progress=False)
    assert again == planned, "the choice recorded, not a new measure"
    _, other = workflow.prepare_training(
        config.make_config(TIME_BUDGET=1.0, **tiny), progress=False
    )
    assert (other.epochs, other.image_size) == (10, 48), "another budget: measured again"
    _, unlimited = workflow.prepare_training(config.make_config(**tiny), progress=False)
    assert (unlimited.epochs, unlimited.image_size) == (10, 48)


def test_a_later_notebook_evaluates_the_run_the_plan_trained(petimages, monkeypatch):
    """As notebook 04 (AUGMENT's pipeline passed) then 05 in a new kernel: 05 starts from the
    plan's side and epochs, even with OVERWRITE, and reuses the finished run."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    monkeypatch.setattr(workflow, "measure_training_speed", lambda *a, **k: {"run": 20.0})
    params = {"RUN_NAME": "later", "IMAGE_SIZE": 48, "NUM_WORKERS": 0, "EPOCHS": 10}
    cfg = workflow.start({**params, "TIME_BUDGET": 0.25})
    loaders, planned = workflow.prepare_training(cfg, transforms.train_pipeline(cfg))
    assert planned.image_size == 32 and next(iter(loaders["train"]))[0].shape[1:3] == (32, 32)
    _, history = workflow.train_run(cfg, progress=False)

    def no_measure(*args, **kwargs):
        raise AssertionError("measured again: the plan was not reused")

    monkeypatch.setattr(workflow, "measure_training_speed", no_measure)
    for overwrite in (False, True):
        later = workflow.start({**params, "TIME_BUDGET": 0.25, "OVERWRITE": overwrite})
        assert (later.epochs, later.image_size) == (planned.epochs, 32)
        assert later.cache_size == planned.cache_size
    later = workflow.start({**params, "TIME_BUDGET": 0.25})
    _, again = workflow.train_run(later, progress=False)
    assert again.equals(history), "the finished run, reused"
    settings = training.load_checkpoint(cfg.run_dir / "best.pt")["settings"]
    assert (settings["image_size"], settings["epochs"]) == (32, planned.epochs)
    assert workflow.start({**params, "TIME_BUDGET": 0.5}).image_size == 48, "another budget"


def test_your_own_pipeline_keeps_image_size(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    monkeypatch.setattr(workflow, "measure_training_speed", lambda *a, **k: {"run": 20.0})
    params = {"IMAGE_SIZE": 48, "NUM_WORKERS": 0, "EPOCHS": 10, "TIME_BUDGET": 0.25}
    own = config.make_config(RUN_NAME="own", **params)
    pipeline = transforms.train_pipeline(dataclasses.replace(own, augment="none"))
    loaders, kept = workflow.prepare_training(own, pipeline, progress=False)
    assert kept.image_size == 48 and kept.epochs < 10
    assert next(iter(loaders["train"]))[0].shape[1:3] == (48, 48)
    transforms.save_pipeline(transforms.train_pipeline(own), "mine.json")
    in_file = config.make_config(RUN_NAME="file", AUGMENT="mine.json", **params)
    _, kept = workflow.prepare_training(in_file, progress=False)
    assert kept.image_size == 48, "a pipeline file is made for IMAGE_SIZE"


def test_a_plan_of_epochs_alone_is_still_read(monkeypatch, tmp_path):
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", str(tmp_path))
    cfg = config.make_config(RUN_NAME="old", TIME_BUDGET=7.0)
    key = {"minutes": 7.0, "epochs": 22, "model": "resnet9", "size": 96, "batch": 32,
           "train": 640}  # fmt: skip
    runs.write_json(cfg.run_dir / "time_budget.json", {"key": key, "epochs": 8})
    for n_train in (None, 640):
        old = workflow.saved_plan(cfg, n_train)
        assert old is not None and (old.epochs, old.image_size) == (8, 96)
    assert workflow.saved_plan(cfg, 700) is None, "other photos: planned again"


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
