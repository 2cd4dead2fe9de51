from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from catsdogs_helpers import config
from catsdogs_helpers.tools import series

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


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


def test_cell_values_win_then_environment_then_defaults():
    environ = {"CATSDOGS_EPOCHS": "7", "CATSDOGS_RESUME": "yes", "CATSDOGS_LR": "0.05"}
    cell = {"EPOCHS": 22, "RESUME": False, "RUN_NAME": "mine", "SEED": 42, "other": object()}
    values = config.read_parameters(cell, environ=environ)
    assert values["EPOCHS"] == 7 and values["RESUME"] is True, "defaults left: environment"
    assert values["LR"] == 0.05 and isinstance(values["LR"], float)
    assert values["RUN_NAME"] == "mine", "a value set in the cell wins"
    assert values["SEED"] == 42 and values["DEVICE"] == "auto"
    runner = config.read_parameters({"EPOCHS": 22}, explicit=True, environ=environ)
    assert runner["EPOCHS"] == 22, "an explicit -p value wins even when it is the default"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("no", False),
     ("off", False), ("", False), ("FALSE", False)],
)  # fmt: skip
def test_booleans_parse_one_way_everywhere(text, expected, monkeypatch):
    monkeypatch.setenv("CATSDOGS_OVERWRITE", text)
    assert config.read_parameters({})["OVERWRITE"] is expected
    assert config.make_config(OVERWRITE=text).overwrite is expected
    assert config.parse_value("PRETRAINED", text) is expected


@pytest.mark.parametrize(
    ("given", "environ", "message"),
    [
        ({"BATCH_SIZE": "abc"}, {}, "BATCH_SIZE='abc' (set in the notebook) is not valid: use a "
         "whole number of at least 1"),
        ({"LR": "fast"}, {}, "LR='fast' (set in the notebook) is not valid: use a number of at "
         "least 0"),
        ({}, {"CATSDOGS_LR": "nan"}, "LR='nan' (from CATSDOGS_LR) is not valid"),
        ({}, {"CATSDOGS_BATCH_SIZE": "abc"}, "BATCH_SIZE='abc' (from CATSDOGS_BATCH_SIZE)"),
        ({}, {"CATSDOGS_RESUME": "maybe"}, "RESUME='maybe' (from CATSDOGS_RESUME) is not valid: "
         "use True or False"),
        ({"EPOCHS": 2.5}, {}, "EPOCHS=2.5"),
        ({"EPOCHS": True}, {}, "EPOCHS=True"),
        ({"RUN_NAME": ["a"]}, {}, "RUN_NAME=['a'] (set in the notebook) is not valid: use text"),
        ({"SCHEDULE": "cosine"}, {}, "SCHEDULE='cosine' (set in the notebook) is not valid: use "
         "one of 'onecycle', 'plateau', 'constant'"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_the_parameter_its_source_and_what_it_takes(given, environ, message):
    with pytest.raises(config.ParameterError, match=re.escape(message)):
        config.read_parameters(given, environ=environ)


def test_unknown_names_suggest_the_closest_parameter():
    with pytest.raises(
        config.ParameterError, match="EPOCH is not a parameter.*did you mean EPOCHS"
    ):
        config.make_config(EPOCH=3)


def test_from_parameters_reads_a_notebook_namespace(monkeypatch):
    monkeypatch.setenv("CATSDOGS_LIMIT_PER_CLASS", "100")
    cfg = config.from_parameters({"RUN_NAME": "nb", "AUGMENT": "heavy", "EPOCHS": 22})
    assert (cfg.run_name, cfg.augment, cfg.limit_per_class, cfg.epochs) == ("nb", "heavy", 100, 22)


def test_a_misspelt_environment_variable_is_an_error_naming_the_parameter(monkeypatch):
    monkeypatch.setenv("CATSDOGS_EPOCH", "3")
    message = "CATSDOGS_EPOCH is no parameter .did you mean CATSDOGS_EPOCHS"
    with pytest.raises(config.ParameterError, match=message):
        config.from_parameters({})
    with pytest.raises(config.ParameterError, match=message):
        series.check_parameters({}, {})
    monkeypatch.delenv("CATSDOGS_EPOCH")
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", "/tmp/elsewhere")  # a folder, not a parameter
    monkeypatch.setenv("CATSDOGS_PROGRESS", "off")
    assert config.from_parameters({}).epochs == config.PARAMETERS["EPOCHS"].default


def test_a_notebook_value_that_is_no_parameter_is_an_error():
    """What papermill's -p DATA_DIRR adds to the notebook: papermill itself only warns."""
    with pytest.raises(config.ParameterError, match="DATA_DIRR is not a parameter.*DATA_DIR"):
        config.from_parameters({"DATA_DIR": "", "DATA_DIRR": "/photos", "IS_COLAB": False})
    import albumentations as A

    cfg = config.from_parameters({"EPOCHS": 3, "IS_COLAB": False, "A": A, "Path": Path})
    assert cfg.epochs == 3, "modules, classes and the Colab flag are no parameter values"


def test_the_defaults_are_our_recipe_and_the_other_recipes_are_parameter_files():
    fast = config.make_config()
    assert (fast.model_name, fast.epochs, fast.image_size, fast.lr) == ("resnet9", 22, 96, 0.4)
    assert fast.cache_size == 110 and fast.for_data(10_000).batch_size == 128
    recipes = {path.stem: series.read_recipe(path) for path in RECIPES.glob("*.yaml")}
    assert set(recipes) == {"fast", "quick", "tutorial", "pretrained"}
    for name, value in recipes["fast"].items():
        if name != "RUN_NAME":
            assert value == config.PARAMETERS[name].default, f"fast.yaml's {name} is the default"
    tutorial = config.make_config(**recipes["tutorial"])
    assert (tutorial.model_name, tutorial.epochs, tutorial.image_size) == ("resnet50", 10, 128)
    assert (tutorial.cache_size, tutorial.optimizer, tutorial.schedule) == (160, "adam", "plateau")
    assert (tutorial.early_stopping, tutorial.augment, tutorial.tta) == (5, "tutorial", "none")
    pretrained = config.make_config(**recipes["pretrained"])
    assert pretrained.cache_size == 219 and pretrained.sizes() == (192,)
    assert pretrained.fine_tuning == config.FineTuning(1, config.BACKBONE_LR_SCALE)
    assert series.read_recipe("quick.yaml") == recipes["quick"], "found in recipes/ by name"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"MODEL_NAME": "resnet9000"}, "MODEL_NAME='resnet9000' (given) is not valid: use one of"),
        ({"EPOCHS": 0}, "EPOCHS=0 (given) is not valid: use a whole number of at least 1"),
        ({"RECIPE": "tutorial"}, "RECIPE is not a parameter of this series"),
        ({"DEVICE": "tpu"}, "DEVICE='tpu' (given) is not valid"),
        ({"IMAGE_SIZE": 8}, "IMAGE_SIZE=8 (given) is not valid: use a whole number of at least 32"),
        ({"AUGMENT": "wild"}, "AUGMENT='wild' is not valid: use one of 'light', 'tutorial', "
         "'heavy', 'none', or a pipeline file saved with A.save (.json)"),
        ({"RUN_NAME": "../escape"}, "is not a usable folder name"),
        ({"LIMIT_PER_CLASS": -5}, "LIMIT_PER_CLASS=-5"),
        ({"NUM_WORKERS": -2}, "NUM_WORKERS=-2 (given) is not valid: use a whole number of "
         "at least -1"),
    ],
)  # fmt: skip
def test_bad_parameters_say_what_to_change(kwargs, message):
    with pytest.raises(config.ParameterError, match=re.escape(message)):
        config.make_config(**kwargs)


def test_small_data_sets_get_smaller_batches_and_scaled_learning_rates():
    cfg = config.make_config()
    assert cfg.for_data(8000).batch_size == 128 and cfg.for_data(8000).lr == pytest.approx(0.4)
    small = cfg.for_data(640)
    assert small.batch_size == 16 and small.lr == pytest.approx(0.4 * 16 / 128)
    assert 640 / small.batch_size >= config.MIN_STEPS_PER_EPOCH
    assert cfg.for_data(10).batch_size == 16, "never below 16"
    assert config.make_config(BATCH_SIZE=8).for_data(10).batch_size == 8, "a smaller one stays"
    assert config.make_config(BATCH_SIZE=16).for_data(8000).lr == pytest.approx(0.4 * 16 / 128)
    adam = config.make_config(OPTIMIZER="adam", LR=1e-3)
    assert adam.for_data(640).lr == pytest.approx(1e-3), "Adam's rate does not scale"


def test_progressive_sizes_grow_over_the_epochs():
    cfg = config.make_config(EPOCHS=10)
    assert cfg.sizes() == (64, 64, 72, 72, 80, 80, 88, 88, 96, 96)
    fixed = config.make_config(IMAGE_SIZE=128, EPOCHS=3, PROGRESSIVE=False)
    assert fixed.sizes() == (128,) * 3


def test_seeds_come_from_one_place():
    assert config.seed_for(7, "split") == config.seed_for(7, "model") == 7
    assert config.seed_for(7, "epoch", 3) == 7003
    with pytest.raises(ValueError, match="purpose"):
        config.seed_for(7, "dropout")


def test_to_dict_is_plain():
    values = config.make_config(RUN_NAME="x").to_dict()
    assert values["lr"] == 0.4 and isinstance(values["data_dir"], str)
    assert values["run_name"] == "x" and values["cache_size"] == 110
    json.dumps(values)


@pytest.mark.parametrize(
    ("cores", "processes", "cpu", "gpu"),
    [(1, 1, 0, 0), (2, 1, 0, 1), (8, 1, 4, 7), (16, 1, 4, 8), (64, 8, 4, 7), (16, 8, 0, 1)],
)
def test_loader_workers_fit_the_device_and_the_processes(cores, processes, cpu, gpu, monkeypatch):
    """On the CPU workers take cores from the model; on a GPU they are all the cores have to
    do, shared by the processes torchrun starts on this machine."""
    monkeypatch.setattr(config, "available_cores", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert config.default_num_workers() == cpu
    assert config.default_num_workers(accelerator=True) == gpu
    assert not config.trains_on_cuda("cpu") and not config.trains_on_cuda("mps")


@pytest.mark.parametrize(
    "name",
    ["a", "run-1_B.v2", "x" * 64, "-dash", "_under", "v1.0"],
)
def test_run_names_of_the_rule_are_accepted(name):
    assert config.make_config(RUN_NAME=name).run_dir.name == name


@pytest.mark.parametrize(
    "name",
    ["my run", "two\nlines", ".hidden", "~home", "x" * 65, ".", "..", "a/b", "a\\b", "café"]
    + ["tab\there", "semi;colon", "star*", "a:b", "end\n", ""],
)
def test_run_names_outside_the_rule_are_refused_by_the_rule_the_message_states(name):
    rule = "use 1 to 64 characters, each a letter (A-Z, a-z), a digit, '-', '_' or '.', not "
    with pytest.raises(config.ParameterError, match=re.escape(rule + "starting with '.'")):
        config.run_dir(name)
    if name == name.strip():  # a parameter's text is stripped first
        with pytest.raises(config.ParameterError, match="RUN_NAME="):
            config.make_config(RUN_NAME=name)


def test_a_huge_run_name_is_cut_in_the_message():
    with pytest.raises(config.ParameterError) as caught:
        config.run_dir("a" * 1_000_000)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("label", ["Cat", "dog", "Golden retriever", "Chat-été", "x" * 100])
def test_class_labels_of_the_rule_are_accepted(label):
    assert config.check_label(label) == label


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("x" * 50_000_000, repr("x" * 100)),
        ("x" * 101, repr("x" * 100)),
        ("two\nlines", r"'two\nlines'"),
        ("tab\t", r"'tab\t'"),
        ("nul\x00", r"'nul\x00'"),
        ("bell\x07", r"'bell\x07'"),
        ("del\x7f", r"'del\x7f'"),
        ("next line\x85", r"'next line\x85'"),
        ("", "''"),
    ],
)
def test_class_labels_outside_the_rule_are_refused_naming_the_label(label, shown):
    with pytest.raises(ValueError, match="1 to 100 characters and no control characters") as caught:
        config.check_label(label)
    message = str(caught.value)
    assert shown in message and "\n" not in message and len(message) < 500


def test_labels_read_from_folders_file_names_or_a_csv_are_checked(tmp_path):
    from catsdogs_helpers import layouts

    folders = tmp_path / "folders"
    for name in ("Cat", "Dog\tbreed"):
        (folders / name).mkdir(parents=True)
        (folders / name / "1.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=re.escape(r"'Dog\tbreed'")):
        layouts.read_labels(folders)
    named = tmp_path / "named"
    named.mkdir()
    for name in ("cat.1.jpg", "dog.1.jpg", "d" * 120 + ".1.jpg"):
        (named / name).write_bytes(b"x")
    pattern = config.make_layout("filenames", "^([a-z]+)[.]", "", tmp_path)
    with pytest.raises(ValueError, match=re.escape(repr("d" * 100))):
        layouts.read_labels(named, pattern)
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "a.jpg").write_bytes(b"x")
    (csv / "labels.csv").write_text("path,label\na.jpg,cat\nb.jpg," + "y" * 5_000_000 + "\n")
    with pytest.raises(ValueError, match="1 to 100 characters and no control characters") as caught:
        layouts.read_labels(csv, config.make_layout("csv", config.DEFAULT_LABEL_PATTERN, "", csv))
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize(
    "digest", ["abc", "g" * 64, "a" * 63, "a" * 65, "sha256:" + "a" * 64, "a" * 32 + " " + "a" * 32]
)
def test_a_dataset_sha256_that_is_no_sha256_is_refused_before_downloading(digest):
    with pytest.raises(config.ParameterError, match="DATASET_SHA256=.*64 hexadecimal digits"):
        config.make_config(DATASET_SHA256=digest)


def test_a_dataset_sha256_of_64_hex_digits_in_either_case_is_accepted():
    digest = "0123456789abcdef" * 4
    assert config.make_config(DATASET_SHA256=digest.upper()).dataset_sha256 == digest
    assert config.make_config(DATASET_SHA256="").dataset_sha256 == ""
