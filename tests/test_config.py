from __future__ import annotations

from pathlib import Path

import pytest

from catsdogs_helpers import config


def test_paths_come_from_environment_not_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert config.data_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("CATSDOGS_DATA_DIR")
    monkeypatch.delenv("CATSDOGS_RUNS_DIR")
    root = Path(config.__file__).resolve().parent.parent
    assert config.data_dir() == root / "data"
    assert config.runs_dir() == root / "runs"
    assert config.run_dir("abc") == root / "runs" / "abc"


def test_env_is_typed_like_the_default(monkeypatch):
    monkeypatch.setenv("CATSDOGS_EPOCHS", "7")
    monkeypatch.setenv("CATSDOGS_RESUME", "true")
    monkeypatch.setenv("CATSDOGS_LR", "0.5")
    assert config.env("EPOCHS", 10) == 7
    assert config.env("RESUME", False) is True
    assert config.env("LR", 0.1) == 0.5
    assert config.env("MISSING", "x") == "x"


def test_blanks_take_the_recipe_defaults():
    fast = config.make_config()
    assert (fast.model_name, fast.epochs, fast.image_size) == ("resnet9", 22, 96)
    assert fast.cache_size == 110 and fast.batch_size == 128
    tutorial = config.make_config(RECIPE="tutorial")
    assert (tutorial.model_name, tutorial.epochs, tutorial.image_size) == ("resnet50", 10, 128)
    assert tutorial.cache_size == 160
    custom = config.make_config(RECIPE="tutorial", MODEL_NAME="resnet18", IMAGE_SIZE=64, EPOCHS=2)
    assert (custom.model_name, custom.image_size, custom.cache_size, custom.epochs) == (
        "resnet18", 64, 80, 2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"MODEL_NAME": "resnet9000"}, "MODEL_NAME='resnet9000' is unknown: use one of"),
        ({"EPOCHS": -1}, "EPOCHS=-1 must be at least 1"),
        ({"RECIPE": "magic"}, "RECIPE='magic' is unknown"),
        ({"DEVICE": "tpu"}, "DEVICE='tpu' is unknown"),
        ({"IMAGE_SIZE": 8}, "IMAGE_SIZE=8 is too small"),
        ({"RUN_NAME": "../escape"}, "is not a usable folder name"),
        ({"LIMIT_PER_CLASS": -5}, "LIMIT_PER_CLASS=-5"),
    ],
)
def test_bad_parameters_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config.make_config(**kwargs)


def test_to_dict_is_plain():
    values = config.make_config(RUN_NAME="x").to_dict()
    assert values["recipe"] == "fast" and isinstance(values["data_dir"], str)
    assert values["run_name"] == "x"
