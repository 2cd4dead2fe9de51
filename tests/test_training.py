from __future__ import annotations

import dataclasses
import logging

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from catsdogs_helpers import config, datasets, devices, models, runs, training, transforms, workflow


@pytest.fixture
def tiny_run(petimages, monkeypatch):
    """A configured run on the synthetic images: 48 px, two epochs."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    cfg = config.make_config(
        RUN_NAME="t", EPOCHS=2, IMAGE_SIZE=48, BATCH_SIZE=16, NUM_WORKERS=0, DEVICE="cpu"
    )
    loaders, cfg = workflow.prepare_training(cfg, progress=False)
    return cfg, loaders


def _train(cfg, loaders, *, scheduler=None, whiten=True, **kwargs):
    """What notebook 04 does: a seeded model, the optimiser and schedule of ``cfg``, fit."""
    training.seed_everything(cfg.seed)
    model = models.create_model(cfg.model_name, 2)
    if whiten:
        models.whiten_first_layer(model, loaders["train"].dataset.images())
    optimizer = training.make_optimizer(model, cfg)
    if scheduler is None:
        scheduler = training.make_scheduler(optimizer, cfg, len(loaders["train"]))
    elif callable(scheduler):
        scheduler = scheduler(optimizer)
    history = training.fit(
        model,
        loaders["train"],
        loaders["val"],
        cfg,
        optimizer=optimizer,
        scheduler=scheduler,
        class_names=["Cat", "Dog"],
        device=torch.device("cpu"),
        progress=False,
        **kwargs,
    )
    return model, history


def test_training_writes_checkpoints_history_and_learns(tiny_run):
    cfg, loaders = tiny_run
    cfg = dataclasses.replace(cfg, epochs=3)
    model, history = _train(cfg, loaders)
    assert len(history) == 3
    assert {"train_loss", "train_nll", "val_loss", "val_acc", "lr", "seconds"} <= set(history)
    assert history["image_size"].tolist() == [32, 40, 48] == list(cfg.sizes()), "growing sizes"
    assert (history["train_loss"] > history["train_nll"]).all(), "label smoothing costs loss"
    for name in ("best.pt", "last.pt", "history.csv", "summary.json", "train_pipeline.json"):
        assert (cfg.run_dir / name).is_file(), name
    last = training.load_checkpoint(cfg.run_dir / "last.pt")
    assert last["finished"] and last["epoch"] == 3
    assert {"optimizer", "scheduler", "scaler", "rng", "settings", "class_names"} <= set(last)
    assert last["settings"]["epochs"] == 3
    assert last["settings"]["parts"]["scheduler_class"] == "OneCycleLR"
    # It learns: 9 validation photos move by 11 points a photo, so the loss tells it too.
    assert history["train_acc"].iloc[-1] > 0.9, "the synthetic classes are easy to tell apart"
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    assert history["val_acc"].max() > 0.6, "above chance on photos it never trained on"
    loaded, checkpoint = training.load_model(cfg.run_dir / "best.pt")
    assert checkpoint["best_acc"] == pytest.approx(history["val_acc"].max())
    x = torch.randn(2, 3, 48, 48)
    model.eval()
    torch.testing.assert_close(loaded(x), model.to(memory_format=torch.contiguous_format)(x))


def test_a_run_trains_resnet9_on_a_first_layer_whitened_from_its_photos_and_fixed(tiny_run):
    cfg, loaders = tiny_run
    model, _ = workflow.train_run(cfg, progress=False)
    expected = models.create_model("resnet9", 2)
    models.whiten_first_layer(expected, loaders["train"].dataset.images())
    torch.testing.assert_close(model.first_conv.weight, expected.first_conv.weight)
    saved, _ = training.load_model(cfg.run_dir / "best.pt")  # what notebook 05 loads
    torch.testing.assert_close(saved.first_conv.weight, expected.first_conv.weight)


def test_the_run_records_the_pipeline_it_trained_with(tiny_run):
    cfg, loaders = tiny_run
    _train(cfg, loaders)
    saved = A.load(str(cfg.run_dir / "train_pipeline.json"))
    pipeline = loaders["train"].dataset.transform
    assert transforms.describe_pipeline(saved) == transforms.describe_pipeline(pipeline)
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    assert settings["train_pipeline"] == transforms.describe_pipeline(pipeline)
    flipped = A.Compose([*pipeline.transforms, A.VerticalFlip(p=0.5)], seed=cfg.seed)
    loaders["train"].dataset.transform = flipped
    with pytest.raises(runs.RunConflict, match="train_pipeline: "):
        _train(cfg, loaders)


def test_finished_run_is_loaded_not_retrained_and_other_settings_refused(tiny_run):
    cfg, loaders = tiny_run
    _, history = _train(cfg, loaders)
    mtime = (cfg.run_dir / "last.pt").stat().st_mtime_ns
    _, again = _train(cfg, loaders)
    pd.testing.assert_frame_equal(again, history)
    _, overwritten = _train(dataclasses.replace(cfg, overwrite=True), loaders)
    pd.testing.assert_frame_equal(overwritten, history)
    assert (cfg.run_dir / "last.pt").stat().st_mtime_ns == mtime, "same settings: reused"
    other = dataclasses.replace(cfg, epochs=3)
    with pytest.raises(runs.RunConflict, match="epochs: 2 then, 3 now"):
        _train(other, loaders)
    with pytest.raises(runs.RunConflict, match="step: 'catsdogs_helpers.training.train_one"):
        _train(cfg, loaders, train_epoch=_no_smoothing)
    with pytest.raises(runs.RunConflict, match="scheduler_class: 'OneCycleLR' then"):
        _train(cfg, loaders, scheduler=_cosine)
    _, replaced = _train(dataclasses.replace(other, overwrite=True), loaders)
    assert len(replaced) == 3


def test_a_run_with_a_whitened_first_layer_is_not_mistaken_for_one_without(tiny_run):
    cfg, loaders = tiny_run
    _train(cfg, loaders)
    with pytest.raises(runs.RunConflict, match="first_layer: 'whitened' then, 'learned' now"):
        _train(cfg, loaders, whiten=False)  # notebook 04 with its whitening line deleted
    older = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    del older["first_layer"]  # a run recorded before the setting existed learned it
    assert runs.identity(older)["first_layer"] == "learned"
    _train(dataclasses.replace(cfg, overwrite=True), loaders, whiten=False)
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    assert settings["first_layer"] == "learned"


def _cosine(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40)


def test_fit_steps_the_schedule_it_is_given(tiny_run):
    """Exercise 3 of notebook 04: a schedule of your own, stepped after every batch; and
    ReduceLROnPlateau, stepped after every epoch with the validation accuracy."""
    cfg, loaders = tiny_run
    steps = 2 * len(loaders["train"])
    cosine = lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)  # noqa: E731
    _, history = _train(dataclasses.replace(cfg, run_name="cosine"), loaders, scheduler=cosine)
    assert history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-9), "annealed to 0 in 2 epochs"
    parts = runs.read_json(config.run_dir("cosine") / "summary.json")["settings"]["parts"]
    assert parts["scheduler_class"] == "CosineAnnealingLR" and parts["scheduler_args"]["T_max"]
    plateau = dataclasses.replace(cfg, run_name="plateau", schedule="plateau", lr=0.05, epochs=3)
    _, history = _train(plateau, loaders)
    assert history["lr"].iloc[0] == pytest.approx(0.05), "no warm-up, no per-batch steps"
    constant = dataclasses.replace(cfg, run_name="constant", schedule="constant", lr=0.01)
    _, history = _train(constant, loaders)
    assert history["lr"].tolist() == pytest.approx([0.01, 0.01])


def _no_smoothing(model, loader, optimizer, loss_fn, device, **kwargs):
    """An exercise's own step: the package's, with plain cross-entropy as the loss."""
    return training.train_one_epoch(
        model, loader, optimizer, torch.nn.CrossEntropyLoss(), device, **kwargs
    )


def test_fit_runs_your_own_step_and_records_it(tiny_run):
    cfg, loaders = tiny_run
    _, history = _train(cfg, loaders, train_epoch=_no_smoothing)
    np.testing.assert_allclose(history["train_loss"], history["train_nll"], rtol=1e-4)
    settings = training.load_checkpoint(cfg.run_dir / "last.pt")["settings"]
    assert settings["step"] == "test_training._no_smoothing"


def test_interrupted_run_needs_resume_and_resumes(tiny_run, monkeypatch):
    cfg, loaders = tiny_run
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
        _train(cfg, loaders)
    monkeypatch.setattr(training, "_atomic_save", real_save)
    with pytest.raises(runs.RunConflict, match="RESUME=True"):
        _train(cfg, loaders)
    _, history = _train(dataclasses.replace(cfg, resume=True), loaders)
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


def test_a_saved_speed_is_reused_for_the_same_measure_only(tmp_path, monkeypatch):
    saved, args = tmp_path / "speed.json", {"image_size": 32, "batch_size": 4, "steps": 1}
    first = training.measure_training_speed("resnet9", {"fp32": {}}, saved=saved, **args)
    assert runs.read_json(saved)["images_per_s"] == first
    monkeypatch.setattr(training, "images_per_second", lambda *a, **k: {"fp32": -1.0})
    again = training.measure_training_speed("resnet9", {"fp32": {}}, saved=saved, **args)
    assert again == first, "the same measure: read back, not measured"
    other = training.measure_training_speed("resnet9", {"fp32": {}}, saved=saved, image_size=40)
    assert other == {"fp32": -1.0}, "another size: measured again"


# ------------------------------------------------- kills while saving, bad checkpoints


def _stop_at(monkeypatch, when: str, name: str, epoch: int) -> None:
    """Stop the run as a kill would, ``when`` ("before" or "after") it writes ``name`` for
    epoch ``epoch`` (every other write goes through)."""

    def stopping(write, target, epoch_of):
        def write_or_stop(*args, **kwargs):
            hit = target(*args) == name and epoch_of(*args) == epoch
            if hit and when == "before":
                raise KeyboardInterrupt
            out = write(*args, **kwargs)
            if hit:
                raise KeyboardInterrupt
            return out

        return write_or_stop

    save = stopping(training._atomic_save, lambda obj, path: path.name, lambda obj, _: obj["epoch"])
    history = stopping(runs.write_history, lambda *_: "history.csv", lambda _, rows: len(rows))
    summary = stopping(runs.write_summary, lambda *_: "summary.json", lambda *a: a[2]["epoch"])
    monkeypatch.setattr(training, "_atomic_save", save)
    monkeypatch.setattr(runs, "write_history", history)
    monkeypatch.setattr(runs, "write_summary", summary)


def _assert_consistent(run_dir) -> dict:
    """last.pt, best.pt, history.csv and summary.json tell of the same epochs; last.pt."""
    last = training.load_checkpoint(run_dir / "last.pt")
    best = training.load_checkpoint(run_dir / "best.pt")
    history = pd.read_csv(run_dir / "history.csv")
    summary = runs.read_json(run_dir / "summary.json")
    assert history["epoch"].tolist() == list(range(1, last["epoch"] + 1))
    pd.testing.assert_frame_equal(history, pd.DataFrame(last["history"]), check_dtype=False)
    assert (summary["epochs_run"], summary["finished"]) == (last["epoch"], last["finished"])
    assert summary["best_val_acc"] == best["best_acc"] == history["val_acc"].max()
    assert best["epoch"] == int(history["val_acc"].idxmax()) + 1 and not best["finished"]
    return last


@pytest.mark.parametrize(
    ("when", "name", "epoch"),
    [
        ("before", "last.pt", 2),
        ("after", "last.pt", 1),
        ("after", "best.pt", 1),
        ("after", "last.pt", 2),
        ("after", "history.csv", 2),
    ],
)
def test_a_kill_while_saving_leaves_one_whole_epoch(tiny_run, when, name, epoch):
    cfg, loaders = tiny_run
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _stop_at(patch, when, name, epoch)
        _train(cfg, loaders)
    saved = training.load_checkpoint(cfg.run_dir / "last.pt")
    if saved["finished"]:
        _, history = _train(cfg, loaders)  # the finished run, loaded
        assert len(history) == 2
    else:
        with pytest.raises(runs.RunConflict, match="RESUME=True"):
            _train(cfg, loaders)
    assert _assert_consistent(cfg.run_dir)["epoch"] == saved["epoch"]
    _, history = _train(dataclasses.replace(cfg, resume=True), loaders)
    assert history["epoch"].tolist() == [1, 2]
    assert _assert_consistent(cfg.run_dir)["finished"]


TAMPERED = """
import pathlib
class Payload:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path({marker!r}),))
"""


def test_a_tampered_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path):
    import traceback

    marker = tmp_path / "the payload ran"
    namespace: dict = {}
    exec(TAMPERED.format(marker=str(marker)), namespace)  # noqa: S102
    path = tmp_path / "best.pt"
    torch.save({"model": namespace["Payload"]()}, path)
    with pytest.raises(training.CheckpointError) as caught:
        training.load_checkpoint(path)
    message = str(caught.value)
    assert not marker.exists(), "the checkpoint was not unpickled"
    assert str(path) in message and "\n" not in message
    assert "tampered with" in message and "not loaded" in message
    assert "new RUN_NAME" in message and "OVERWRITE=True" in message
    shown = "".join(traceback.format_exception(caught.value))
    for advice in ("weights_only", "safe_globals", "trusted source", "allowlist"):
        assert advice not in shown, f"PyTorch's advice {advice!r} is passed on"
    numpy_inside = tmp_path / "numpy.pt"
    torch.save({"model": np.zeros(3)}, numpy_inside)
    with pytest.raises(training.CheckpointError) as caught:
        training.load_checkpoint(numpy_inside)
    shown = "".join(traceback.format_exception(caught.value))
    assert "weights_only" not in shown and "safe_globals" not in shown
    assert "numpy" in str(caught.value), "what the file holds that was refused"


def test_a_finished_run_with_a_bad_last_pt_is_loaded_from_best_pt(tiny_run, caplog):
    cfg, loaders = tiny_run
    model, history = _train(cfg, loaders)
    last = cfg.run_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="catsdogs_helpers"):
        again, reloaded = _train(cfg, loaders)
    assert "last.pt" in caplog.text and "best.pt" in caplog.text
    pd.testing.assert_frame_equal(reloaded, history, check_dtype=False)
    best = training.load_checkpoint(cfg.run_dir / "best.pt")
    for name, value in again.state_dict().items():
        torch.testing.assert_close(value, best["model"][name])
    with pytest.raises(training.CheckpointError, match="last.pt is unreadable"):
        _train(dataclasses.replace(cfg, epochs=3), loaders)  # best.pt: other settings
    summary = runs.read_json(cfg.run_dir / "summary.json")
    runs.write_json(cfg.run_dir / "summary.json", {**summary, "finished": False})
    with pytest.raises(training.CheckpointError, match="last.pt is unreadable"):
        _train(cfg, loaders)
    _, replaced = _train(dataclasses.replace(cfg, overwrite=True), loaders)
    assert len(replaced) == 2 and training.load_checkpoint(last)["finished"]


def test_onednn_held_to_avx2_means_no_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 runs a bf16 CPU as a laptop's: fp32, no autocast."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not devices.cpu_supports_bf16()
    assert devices.amp_dtype(torch.device("cpu")) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert devices.cpu_supports_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert devices.amp_dtype(torch.device("cpu")) == torch.bfloat16


def test_fit_says_what_it_trains_then_how_long_the_rest_takes(tiny_run, caplog):
    cfg, loaders = tiny_run
    cfg = dataclasses.replace(cfg, epochs=3)
    with caplog.at_level(logging.INFO, logger="catsdogs_helpers"):
        _, history = _train(cfg, loaders)
    n = len(loaders["train"].dataset)
    plan = f"training resnet9 in {cfg.run_dir}: 3 epochs at 32 to 48 px on {n} photos"
    assert plan in caplog.text
    first = history.iloc[0]
    left = first["seconds"] / 32**2 * (40**2 + 48**2)
    expected = f"epoch 1 took {first['seconds']:.0f} s: the other 2 need about {left / 60:.0f} min"
    assert expected in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="catsdogs_helpers"):
        _train(cfg, loaders)  # finished: loaded, nothing to plan
    assert "training resnet9" not in caplog.text


def test_a_pretrained_start_head_only_epoch_is_planned_as_a_forward_pass():
    cfg = config.make_config(MODEL_NAME="efficientnet_lite0", PRETRAINED=True, EPOCHS=3,
                             IMAGE_SIZE=160, PROGRESSIVE=False)  # fmt: skip
    step = 1000 / 50.0  # an epoch of 1,000 photos that trains every layer, at 50 images/s
    seconds = training.training_seconds(cfg, cfg.sizes(), 1000, 50.0)
    assert seconds == pytest.approx(step * (training.FORWARD_COST + 2))
    assert training.training_seconds(cfg, cfg.sizes()[1:], 1000, 50.0, 1) == pytest.approx(2 * step)
    after_head = training.FitState(epoch=1, history=[{"seconds": 10.0, "image_size": 160}])
    message = training.expected_message(cfg, after_head)  # 2 epochs of all layers: 30 s each
    assert "the other 2 need about 1 min more" in message


def test_the_plan_of_a_resumed_pretrained_start_counts_the_epochs_left(tmp_path, monkeypatch):
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", str(tmp_path))
    cfg = config.make_config(MODEL_NAME="efficientnet_lite0", PRETRAINED=True, EPOCHS=3,
                             IMAGE_SIZE=160, PROGRESSIVE=False)  # fmt: skip
    key = {"model": "efficientnet_lite0", "size": 160, "batch": 32, "device": "cpu"}
    runs.write_json(cfg.run_dir / "speed.json", {"key": key, "images_per_s": {"fp32": 50.0}})
    n = 30000  # 600 s an epoch of all layers, 200 s the head-only first
    assert training.plan_message(cfg, n, 0).endswith(
        ": about 23 min at the 50 images/s measured before"
    )
    assert training.plan_message(cfg, n, 1).endswith(
        ": about 20 min at the 50 images/s measured before"
    )


def test_fit_gives_the_expected_time_before_it_starts_where_the_step_was_measured(tiny_run):
    cfg, loaders = tiny_run
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    key = {"model": "resnet9", "size": 48, "batch": 32, "device": "cpu", "settings": {}}
    runs.write_json(cfg.run_dir / "speed.json", {"key": key, "images_per_s": {"a": 2.0, "b": 4.0}})
    n = len(loaders["train"].dataset)
    seconds = n * ((32 / 48) ** 2 + 1) / 4.0  # 2 epochs at 32 then 48 px, at the faster rate
    message = training.plan_message(cfg, n, 0)
    assert message.endswith(f": about {seconds / 60:.0f} min at the 4 images/s measured before")
    other = dataclasses.replace(cfg, model_name="resnet18")
    assert training.plan_message(other, n, 0).endswith("the time it needs follows the first epoch")


def test_a_loader_that_crops_on_the_device_trains_and_records_the_light_pipeline(tiny_run):
    cfg, loaders = tiny_run
    assert not isinstance(loaders["train"], datasets.DeviceCropFlip), "on a CPU: in the workers"
    on_device = datasets.make_loader(
        loaders["train"].dataset, batch_size=16, shuffle=True, drop_last=True,
        crop_on=torch.device("cpu"),
    )  # fmt: skip
    assert isinstance(on_device, datasets.DeviceCropFlip)
    assert on_device.dataset.transform is None, "the workers only read the cache"
    assert loaders["train"].dataset.transform is not None, "the dataset given stays as it was"
    images, labels = next(iter(on_device))
    assert images.shape == (16, 48, 48, 3) and len(on_device) == len(loaders["train"])
    epochs = []
    for _ in range(2):
        training.reseed_epoch(on_device, 7)
        epochs.append(torch.cat([batch for batch, _ in on_device]))
    assert torch.equal(*epochs), "an epoch's draws come from its seed"
    _, history = _train(cfg, {**loaders, "train": on_device})
    assert history["val_acc"].max() > 0.7
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    light = transforms.describe_pipeline(loaders["train"].dataset.transform)
    assert settings["train_pipeline"] == light, "the run records the pipeline it stands for"
    _, again = _train(cfg, loaders)  # the same run, cropped by the workers: reused
    pd.testing.assert_frame_equal(again, history)
    on_device.dataset.transform = transforms.heavy_pipeline(48, 55)
    with pytest.raises(ValueError, match="crops and flips on the device: to train with anoth"):
        next(iter(on_device))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the crop moves to a CUDA GPU only")
def test_on_a_gpu_the_light_pipeline_crops_and_flips_there(tiny_run):
    cfg, _ = tiny_run
    loaders, _ = workflow.prepare_training(dataclasses.replace(cfg, device="cuda"), progress=False)
    assert isinstance(loaders["train"], datasets.DeviceCropFlip)
    images, _labels = next(iter(loaders["train"]))
    assert images.is_cuda and images.shape[1:] == (48, 48, 3)


def test_the_whitening_photos_are_spread_over_the_training_set(tiny_run):
    _, loaders = tiny_run
    dataset = loaders["train"].dataset
    cached = np.load(dataset.cache_path)
    assert (dataset.images(2) == cached[dataset.indices[[0, -1]]]).all(), "the first, the last"
    assert set(dataset.labels[[0, -1]]) == {0, 1}, "so of both classes (sorted by path)"
    assert len(dataset.images(len(dataset) + 5)) == len(dataset), "no more than there are"
