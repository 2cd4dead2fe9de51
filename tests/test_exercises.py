"""The notebooks' exercises that are a parameter change, done as written at a tiny size.

Each test names the exercise it runs. The parameters go through the same path as a
notebook's (``config.from_parameters``), and the run goes through ``workflow.train_run``, the
calls notebooks 04 and 05 make.
"""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import pandas as pd
import pytest

from catsdogs_helpers import config, runs, splitting, validating, workflow
from catsdogs_helpers.tools import series

TINY = {"IMAGE_SIZE": 48, "NUM_WORKERS": 0}


@pytest.fixture
def data(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    return petimages


def _run(**cell):
    cfg = config.from_parameters({**TINY, **cell})
    model, history = workflow.train_run(cfg, progress=False)
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
    loaders, _ = workflow.prepare_training(cfg, progress=False)
    transform = loaders["train"].dataset.transform
    assert any(isinstance(t, A.ToGray) for t in transform.transforms), "the heavy pipeline"
    _, history = workflow.train_run(cfg, progress=False)
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    assert settings["augment"] == "heavy" and len(history) == 2
    row = runs.runs_table().set_index("run").loc["heavy"]
    assert row["augment"] == "heavy" and row["pipeline"].endswith("GaussianBlur, ToGray")


def test_04_exercise_3_the_learning_rate_and_the_schedule(data):
    cfg, history = _run(LR=0.05, SCHEDULE="plateau", RUN_NAME="plateau", EPOCHS=2)
    settings = runs.read_json(cfg.run_dir / "summary.json")["settings"]
    assert settings["lr"] == pytest.approx(0.05 * settings["batch_size"] / 128), "LR per 128"
    assert history["lr"].tolist() == [settings["lr"]] * 2, "no warm-up: the rate itself"
    _, default = _run(EPOCHS=2, RUN_NAME="default")
    table = runs.runs_table().set_index("run")
    assert table.loc["plateau", "schedule"] == "plateau"
    assert table.loc["default", "schedule"] == "onecycle"


def test_02_exercise_3_another_seed_keeps_the_split_sizes(data):
    manifest = validating.validate_folder(data, data.parent / "manifest.csv", progress=False)
    sizes = [
        splitting.split_summary(splitting.split_dataset(manifest, seed=seed))["total"].tolist()
        for seed in (42, 7)
    ]
    assert sizes[0] == sizes[1]
    a, b = (splitting.split_dataset(manifest, seed=seed) for seed in (42, 7))
    assert not a["split"].equals(b["split"]), "but other photos in each part"


def _notebook_with_cells(source: Path, folder: Path, after: dict[str, str]) -> Path:
    """A copy of ``source`` with a new code cell after the first cell holding each key."""
    notebook = json.loads(source.read_text())
    cells = []
    for cell in notebook["cells"]:
        cells.append(cell)
        for marker, code in after.items():
            if marker in "".join(cell["source"]):
                new = {"cell_type": "code", "execution_count": None, "metadata": {}}
                cells.append({**new, "outputs": [], "source": code, "id": f"new-{len(cells)}"})
    notebook["cells"] = cells
    folder.mkdir(parents=True, exist_ok=True)
    (folder / source.name).write_text(json.dumps(notebook))
    return folder


def _edited(notebook: Path, folder: Path, start: str, after: str, added: str) -> None:
    """Notebook 03's exercise 1 as written: in the cell that starts with ``start``, add the
    line ``added`` after the line that holds ``after``."""
    nb = json.loads((folder / notebook.name).read_text())
    cell = next(c for c in nb["cells"] if "".join(c["source"]).startswith(start))
    lines = "".join(cell["source"]).split("\n")
    at = next(i for i, line in enumerate(lines) if after in line)
    cell["source"] = "\n".join([*lines[: at + 1], added, *lines[at + 1 :]])
    (folder / notebook.name).write_text(json.dumps(nb))


def test_03_exercise_1_your_pipeline_trains_in_04_and_shows_in_the_runs_table(data, tmp_path):
    """Notebook 03: a vertical flip added to ``ours``, saved; notebook 04 trains with it
    (``AUGMENT``) and exercise 3's own schedule, in a new cell after the optimiser's."""
    notebooks = config.project_root() / "notebooks"
    folder = _notebook_with_cells(notebooks / "03_augment.ipynb", tmp_path / "nb", {
        "ours = A.Compose(": 'transforms.save_pipeline(ours, "vflip.json")',
    })  # fmt: skip
    _edited(notebooks / "03_augment.ipynb", folder, "ours = A.Compose(", "A.HorizontalFlip",
            "        A.VerticalFlip(p=0.5),")  # fmt: skip
    cosine = (
        "scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, "
        'T_max=cfg.epochs * len(loaders["train"]))'
    )
    _notebook_with_cells(notebooks / "04_train.ipynb", folder, {"scheduler = training.": cosine})
    cell = {**TINY, "EPOCHS": 2, "AUGMENT": "vflip.json", "RUN_NAME": "vflip"}
    series.run_series(cell, notebooks_dir=folder, only=["03", "04"])
    saved = A.load(str(config.run_dir("vflip") / "train_pipeline.json"))
    assert [type(t).__name__ for t in saved.transforms][-2:] == ["HorizontalFlip", "VerticalFlip"]
    row = runs.runs_table().set_index("run").loc["vflip"]
    assert row["pipeline"] == "SmallestMaxSize, RandomCrop, HorizontalFlip, VerticalFlip"
    history = pd.read_csv(config.run_dir("vflip") / "history.csv")
    assert history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-9), "the cosine schedule ran"
    settings = runs.read_json(config.run_dir("vflip") / "summary.json")["settings"]
    assert settings["parts"]["scheduler_class"] == "CosineAnnealingLR"


def test_05_exercises_3_and_4_in_new_cells(data, tmp_path):
    """Exercise 3's cell after the threshold cell and exercise 4's at the end, as written."""
    exercise_3 = (
        "point = calibration.choose_threshold(val_labels, decision.calibrate(val_probs), "
        "class_names,\n    goal_class, 0.95)\n"
        "print('95 %:', point)\n"
        "assert point.recall >= decision.recall or np.isnan(decision.threshold)\n"
    )
    exercise_4 = (
        "crops = predicting.predict_files("
        'predicting.load_classifier(cfg.run_dir, tta="flip_crops"), source)\n'
        "print(crops[['path', 'predicted', 'confidence']])\n"
        "assert len(crops) == len(predictions) and (crops['error'] == predictions['error']).all()\n"
    )  # fmt: skip
    notebook = config.project_root() / "notebooks" / "05_infer.ipynb"
    folder = _notebook_with_cells(notebook, tmp_path / "nb", {
        "calibration.save_decision(": "import numpy as np\n" + exercise_3,
        "widgets.photo_upload(": exercise_4,
    })  # fmt: skip
    out = series.run_series({**TINY, "EPOCHS": 1, "RUN_NAME": "ex05"}, notebooks_dir=folder)
    executed = (out / "05_infer.ipynb").read_text()
    assert "95 %: OperatingPoint(" in executed
    assert "confidence" in executed.split("crops = predicting")[-1], "exercise 4 printed"
