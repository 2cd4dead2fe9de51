from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from catsdogs_helpers import config, devices, models, runs, steps, training


@pytest.fixture
def tiny_run(petimages, monkeypatch):
    """A configured run on the synthetic images: 48 px, two epochs."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    cfg = config.make_config(RUN_NAME="t", EPOCHS=2, IMAGE_SIZE=48, BATCH_SIZE=16, NUM_WORKERS=0)
    loaders, plan = steps.prepare_training(cfg, progress=False)
    return cfg, loaders, plan


def _train(cfg, loaders, plan, **kwargs):
    training.seed_everything(cfg.seed)
    model = models.create_model(plan.model_name, 2)
    history = training.fit(
        model, loaders["train"], loaders["val"], plan, run_dir=cfg.run_dir,
        class_names=["Cat", "Dog"], settings=cfg.to_dict(), device=torch.device("cpu"),
        progress=False, **kwargs,
    )  # fmt: skip
    return model, history


def test_training_writes_checkpoints_history_and_learns(tiny_run):
    cfg, loaders, plan = tiny_run
    plan = dataclasses.replace(plan, epochs=3, sizes=(40, 48, 48))
    model, history = _train(cfg, loaders, plan)
    assert len(history) == 3
    assert {"train_loss", "train_nll", "val_loss", "val_acc", "lr", "seconds"} <= set(history)
    assert history["image_size"].tolist() == [40, 48, 48], "each epoch at the plan's size"
    assert (history["train_loss"] > history["train_nll"]).all(), "label smoothing costs loss"
    for name in ("best.pt", "last.pt", "history.csv", "summary.json"):
        assert (cfg.run_dir / name).is_file(), name
    last = training.load_checkpoint(cfg.run_dir / "last.pt")
    assert last["finished"] and last["epoch"] == 3
    assert {"optimizer", "scheduler", "scaler", "rng", "settings", "class_names"} <= set(last)
    assert last["settings"]["plan"]["epochs"] == 3
    assert history["val_acc"].max() > 0.7, "the synthetic classes are easy to tell apart"
    loaded, checkpoint = training.load_model(cfg.run_dir / "best.pt")
    assert checkpoint["best_acc"] == pytest.approx(history["val_acc"].max())
    x = torch.randn(2, 3, 48, 48)
    model.eval()
    torch.testing.assert_close(loaded(x), model.to(memory_format=torch.contiguous_format)(x))


def test_finished_run_is_loaded_not_retrained_and_other_settings_refused(tiny_run):
    cfg, loaders, plan = tiny_run
    _, history = _train(cfg, loaders, plan)
    mtime = (cfg.run_dir / "last.pt").stat().st_mtime_ns
    _, again = _train(cfg, loaders, plan)
    pd.testing.assert_frame_equal(again, history)
    _, overwritten = _train(cfg, loaders, plan, overwrite=True)
    pd.testing.assert_frame_equal(overwritten, history)
    assert (cfg.run_dir / "last.pt").stat().st_mtime_ns == mtime, "same settings: reused"
    other = dataclasses.replace(plan, epochs=3, sizes=(48,) * 3)
    with pytest.raises(runs.RunConflict, match="epochs: 2 then, 3 now"):
        _train(cfg, loaders, other)
    with pytest.raises(runs.RunConflict, match="step: 'catsdogs_helpers.training.train_one"):
        _train(cfg, loaders, plan, train_epoch=_no_smoothing)
    _, replaced = _train(cfg, loaders, other, overwrite=True)
    assert len(replaced) == 3


def _no_smoothing(model, loader, optimizer, loss_fn, device, **kwargs):
    """An exercise's own step: the package's, with plain cross-entropy as the loss."""
    return training.train_one_epoch(
        model, loader, optimizer, torch.nn.CrossEntropyLoss(), device, **kwargs
    )


def test_fit_runs_your_own_step_and_records_it(tiny_run):
    cfg, loaders, plan = tiny_run
    _, history = _train(cfg, loaders, plan, train_epoch=_no_smoothing)
    np.testing.assert_allclose(history["train_loss"], history["train_nll"], rtol=1e-4)
    settings = training.load_checkpoint(cfg.run_dir / "last.pt")["settings"]
    assert settings["step"] == "test_training._no_smoothing"


def test_interrupted_run_needs_resume_and_resumes(tiny_run, monkeypatch):
    cfg, loaders, plan = tiny_run
    real_save = training._atomic_save
    calls = []

    def crash_after_first_epoch(obj, path):
        real_save(obj, path)
        if path.name == "last.pt":
            calls.append(obj["epoch"])
            if obj["epoch"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(training, "_atomic_save", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(cfg, loaders, plan)
    monkeypatch.setattr(training, "_atomic_save", real_save)
    with pytest.raises(runs.RunConflict, match="RESUME=True"):
        _train(cfg, loaders, plan)
    _, history = _train(cfg, loaders, plan, resume=True)
    assert history["epoch"].tolist() == [1, 2]
    assert training.load_checkpoint(cfg.run_dir / "last.pt")["finished"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": models.create_model("resnet18", 2).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(training.CheckpointError, match="truncated"):
        training.load_checkpoint(path)
    with pytest.raises(training.CheckpointError, match="train first"):
        training.load_checkpoint(tmp_path / "missing.pt")


def test_to_model_input_normalises_on_the_device():
    images = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x = devices.to_model_input(images, torch.device("cpu"))
    assert x.shape == (2, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=1e-5)


def test_device_and_precision_choice():
    assert devices.pick_device("cpu") == torch.device("cpu")
    dtype = devices.amp_dtype(torch.device("cpu"))
    assert dtype == (torch.bfloat16 if devices.cpu_supports_bf16() else None)
    assert devices.amp_dtype(torch.device("cpu"), enabled=False) is None
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="DEVICE='auto'"):
            devices.pick_device("cuda")


@pytest.mark.parametrize("name", config.MODEL_NAMES)
def test_every_model_builds_for_any_number_of_classes(name):
    model = models.create_model(name, 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown"):
        models.create_model("vgg11", 2)


def test_training_speed_is_measured_for_each_setting_in_turn():
    speed = training.measure_training_speed(
        "resnet9",
        {"fp32": {}, "bf16": {"amp_dtype": torch.bfloat16, "channels_last": True}},
        image_size=32, batch_size=4, steps=2, warmup=1,
    )  # fmt: skip
    assert list(speed) == ["fp32", "bf16"] and all(rate > 0 for rate in speed.values())
    with pytest.raises(TypeError, match="unknown options"):
        training.measure_training_speed("resnet9", {"x": {"amp": True}}, image_size=32)
