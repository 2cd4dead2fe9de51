"""The notebooks' exercises that are a parameter change, done as written at a tiny size.

Each test names the exercise it runs. The parameters go through the same path as a
notebook's (``config.from_parameters``), and the run goes through ``steps.train_run``, the
calls notebooks 04 and 05 make.
"""

from __future__ import annotations

import albumentations as A
import pytest

from catsdogs_helpers import config, runs, splitting, steps, validating

TINY = {"IMAGE_SIZE": 48, "NUM_WORKERS": 0}


@pytest.fixture
def data(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    return petimages


def _run(**cell):
    cfg = config.from_parameters({**TINY, **cell})
    model, history = steps.train_run(cfg, progress=False)
    return cfg, history


def test_04_exercise_1_a_bigger_model(data):
    cfg, history = _run(MODEL_NAME="resnet18", EPOCHS=2, RUN_NAME="resnet18")
    _, default = _run(EPOCHS=2, RUN_NAME="default")
    assert len(history) == len(default) == 2
    table = runs.runs_table().set_index("run")
    assert (
        table.loc["resnet18", "model"] == "resnet18" and table.loc["default", "model"] == "resnet9"
    )


def test_04_exercise_2_half_the_epochs(data):
    cfg, history = _run(EPOCHS=11, RUN_NAME="half")
    assert len(history) == 11
    assert history["image_size"].iloc[-1] == 48, "the shorter schedule still ends at full size"
    assert history["lr"].iloc[-1] < history["lr"].max() / 100, "and still anneals"


def test_03_exercise_2_train_with_the_heavy_pipeline(data):
    cfg = config.from_parameters({**TINY, "AUGMENT": "heavy", "RUN_NAME": "heavy", "EPOCHS": 2})
    loaders, plan = steps.prepare_training(cfg, progress=False)
    transform = loaders["train"].dataset.transform
    assert any(isinstance(t, A.ToGray) for t in transform.transforms), "the heavy pipeline"
    _, history = steps.train_run(cfg, progress=False)
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    assert settings["plan"]["augment"] == "heavy" and len(history) == 2
    assert runs.runs_table().set_index("run").loc["heavy", "augment"] == "heavy"


def test_02_exercise_3_another_seed_keeps_the_split_sizes(data):
    manifest = validating.validate_folder(data, data.parent / "manifest.csv", progress=False)
    sizes = [
        splitting.split_summary(splitting.split_dataset(manifest, seed=seed))["total"].tolist()
        for seed in (42, 7)
    ]
    assert sizes[0] == sizes[1]
    a, b = (splitting.split_dataset(manifest, seed=seed) for seed in (42, 7))
    assert not a["split"].equals(b["split"]), "but other photos in each part"
