"""Using a run outside the notebooks: the exported ONNX and TorchScript files give the model's
probabilities for any batch size, and the console command predicts files, folders and globs.

The runs here are randomly initialised models saved as training saves them: no training is
needed to check that two ways of computing the same thing agree.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fakedata
from catsdogs_helpers import (
    calibration,
    evaluation,
    models,
    predicting,
    runs,
    transforms,
)
from catsdogs_helpers.tools import export, predict

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("Cat", "Dog")


def save_run(run_dir: Path, model_name="resnet9", size=48, tta="flip", seed=0, gain=300.0):
    """A run folder whose ``best.pt`` holds a random model in the format training writes.
    The output layer is scaled by ``gain`` so that probabilities differ clearly between
    photos (a random ResNet-9's are all close to 0.5)."""
    torch.manual_seed(seed)
    model = models.create_model(model_name, len(CLASSES)).eval()
    with torch.no_grad():
        model.fc.weight.mul_(gain)
    preprocessing = transforms.Preprocessing(cache_size=size + 8, eval_size=size, tta=tta)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": model.state_dict(), "class_names": list(CLASSES), "model_name": model_name,
         "settings": {}, "preprocessing": preprocessing.to_dict()},
        run_dir / "best.pt",
    )  # fmt: skip
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A ResNet-9 run (48 px, flip averaging) and its export, made once for this module."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    save_run(run_dir)
    export.export_run(run_dir)
    return run_dir


@pytest.fixture
def photos(tmp_path) -> Path:
    """A few photos of each class and the archive's kinds of broken files."""
    return fakedata.make_petimages(tmp_path / "photos", per_class=3)


def reference(run_dir: Path, images: torch.Tensor) -> np.ndarray:
    """The PyTorch classifier's probabilities: :func:`evaluation.probabilities`."""
    c = predicting.load_classifier(run_dir, device="cpu")
    with torch.no_grad():
        return evaluation.probabilities(c.model, images, c.device, c.preprocessing).numpy()


def batch(n: int, size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def check_parity(run_dir: Path, size: int) -> None:
    """Both exported files agree with PyTorch to 1e-4, at batch sizes other than the
    exported one (2)."""
    for n in (5, 1):
        images = batch(n, size)
        expected = reference(run_dir, images)
        assert expected.shape == (n, 2)
        assert n == 1 or expected[:, 0].std() > 0.01, "outputs that vary, or this says little"
        for runtime in export.RUNTIMES:
            got = export.load_exported(run_dir, runtime=runtime).runtime(images.numpy())
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=runtime)


def test_onnx_and_torchscript_give_the_models_probabilities_for_any_batch_size(exported):
    check_parity(exported, size=48)


def test_model_json_says_how_to_prepare_photos_and_decide(exported, tmp_path):
    info = json.loads((exported / "export" / "model.json").read_text())
    checkpoint = torch.load(exported / "best.pt", weights_only=True)
    assert info["preprocessing"] == checkpoint["preprocessing"]
    assert info["class_names"] == list(CLASSES) and info["decision"]["temperature"] == 1.0
    assert info["input"] == {"name": "images", "shape": ["N", 48, 48, 3], "dtype": "uint8",
                             "layout": "NHWC, RGB, 0-255"}  # fmt: skip
    copy = shutil.copytree(exported / "export", tmp_path / "elsewhere")
    moved = export.load_exported(copy, runtime="onnx")
    assert moved.preprocessing == transforms.Preprocessing.from_dict(info["preprocessing"])
    images = batch(3, 48)
    np.testing.assert_allclose(moved.runtime(images.numpy()), reference(exported, images),
                               atol=1e-4, rtol=0)  # fmt: skip


def test_predicting_with_the_exports_gives_the_runs_table(exported, photos):
    """predict_files with each exported file: the same rows, answers and errors."""
    expected = predicting.predict_files(predicting.load_classifier(exported, device="cpu"), photos)
    assert (expected["error"] != "").any() and (expected["error"] == "").sum() >= 6
    for runtime in export.RUNTIMES:
        table = predicting.predict_files(export.load_exported(exported, runtime=runtime), photos)
        assert table["model"].eq(f"tiny (model.{'onnx' if runtime == 'onnx' else 'pt'})").all()
        pd.testing.assert_frame_equal(
            table.drop(columns="model"), expected.drop(columns="model"), atol=1e-4, rtol=0
        )


def test_exporting_again_reuses_the_files_and_never_replaces_another_model(exported, tmp_path):
    run_dir = shutil.copytree(exported, tmp_path / "copy")
    files = export.export_files(run_dir)
    before = {p: p.stat().st_mtime_ns for p in (files.onnx, files.torchscript)}
    decision = calibration.Decision(1.5)  # a new calibration
    calibration.save_decision(run_dir, decision)
    export.export_run(run_dir)
    assert {p: p.stat().st_mtime_ns for p in before} == before, "same model: not exported again"
    assert export.load_exported(run_dir).decision == decision, "the new calibration is saved"

    save_run(run_dir, seed=1)
    with pytest.raises(runs.RunConflict, match="export of another model"):
        export.export_run(run_dir)
    with pytest.raises(runs.RunConflict, match="export of another model"):
        export.export_run(run_dir, tta="none")
    assert {p: p.stat().st_mtime_ns for p in before} == before, "nothing was touched"


def test_overwrite_replaces_the_export_with_a_torchvision_model(exported, tmp_path):
    """A ResNet-18 exported over the ResNet-9's files with overwrite: the new files give the
    new model's probabilities."""
    run_dir = shutil.copytree(exported, tmp_path / "copy")
    save_run(run_dir, model_name="resnet18", size=64, tta="none", gain=20.0)
    export.export_run(run_dir, overwrite=True)
    info = json.loads(export.export_files(run_dir).info.read_text())
    assert info["input"]["shape"] == ["N", 64, 64, 3] and info["preprocessing"]["tta"] == "none"
    check_parity(run_dir, size=64)


def test_the_ten_views_are_averaged_inside_the_exported_graph(tmp_path):
    """With ``flip_crops`` the files take the whole square and crop it themselves. (A tiny
    network: the graph holds one forward pass per view, which makes big models slow to
    export.)"""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 2),
    ).eval()  # fmt: skip
    preprocessing = transforms.Preprocessing(cache_size=40, eval_size=32, tta="flip_crops")
    classifier = predicting.Classifier(
        model, CLASSES, preprocessing, calibration.Decision(), torch.device("cpu")
    )
    program = export.capture(classifier)
    onnx_file = export.save_onnx(program, tmp_path / "model.onnx")
    script_file = export.save_torchscript(program, tmp_path / "model.pt")
    images = batch(3, 40)
    with torch.no_grad():
        expected = evaluation.probabilities(model, images, torch.device("cpu"), preprocessing)
        centre_only = evaluation.probabilities(
            model, images, torch.device("cpu"), preprocessing.with_tta("none")
        )
    assert not torch.allclose(expected, centre_only, atol=1e-3), "the views change the answer"
    for run in (export.onnx_runtime(onnx_file), export.torchscript_runtime(script_file)):
        np.testing.assert_allclose(run(images.numpy()), expected.numpy(), atol=1e-4, rtol=0)


def test_the_docs_onnx_example_gives_the_packages_probabilities(exported, tmp_path, capsys):
    """docs/outside-notebooks.md's ONNX Runtime code, run as printed on a PNG (no
    reduced-scale JPEG decoding), gets the probabilities predict_files gets."""
    readme = (REPO / "docs" / "outside-notebooks.md").read_text()
    code = re.search(r"```python\n(import json, numpy.*?)```", readme, re.DOTALL).group(1)
    photo = tmp_path / "photo.png"
    fakedata.photo(1, np.random.default_rng(0), size=(203, 150)).save(photo)
    code = code.replace("runs/default/export", str(exported / "export"))
    namespace: dict = {}
    exec(code.replace("photo.jpg", str(photo)), namespace)
    expected = predicting.predict_files(predicting.load_classifier(exported), photo)
    np.testing.assert_allclose(
        namespace["probs"], expected[["p_Cat", "p_Dog"]].to_numpy(), atol=1e-5, rtol=0
    )
    assert "{'Cat': " in capsys.readouterr().out


# ------------------------------------------------------------------- the console command


def test_the_command_predicts_files_folders_and_globs(exported, photos, monkeypatch, capsys):
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", str(exported.parent))
    cats, dogs = photos / "Cat", photos / "Dog"
    out = photos.parent / "out" / "predictions.json"
    code = predict.main([str(cats), str(dogs / "*.jpg"), str(dogs / "0.jpg"), "--run", "tiny",
                     "--format", "json", "--output", str(out)])  # fmt: skip
    assert code == 0
    rows = pd.DataFrame(json.loads(out.read_text()))
    expected = predicting.predict_files(
        predicting.load_classifier(exported, device="cpu"), [cats, dogs / "*.jpg"]
    )
    assert rows["path"].tolist() == expected["path"].tolist(), "each file once, in order"
    assert rows["predicted"].tolist() == expected["predicted"].tolist()
    assert set(rows.loc[rows["error"] != "", "error"]) >= {"truncated", "empty", "too_small"}
    err = capsys.readouterr().err
    assert "model tiny, test-time augmentation flip; decision: the most likely class" in err
    assert f"{(expected['error'] == '').sum()} of {len(expected)} photos classified" in err


def _csv(capsys) -> tuple[pd.DataFrame, str]:
    out, err = capsys.readouterr()
    table = pd.read_csv(io.StringIO(out), keep_default_na=False)
    return table[table["error"] == ""], err


def test_the_most_likely_class_unless_a_named_rule_is_asked_for(exported, photos, tmp_path, capsys):
    run_dir = shutil.copytree(exported, tmp_path / "with-threshold")
    p_cat = predicting.predict_files(predicting.load_classifier(run_dir), photos)["p_Cat"]
    threshold = float(p_cat.dropna().median())
    rule = calibration.Decision(1.0, "Cat", threshold, "99% precision for Cat")
    calibration.save_decision(run_dir, rule, name="Cat-99")
    calibration.save_decision(run_dir, rule)  # an older run's decision.json with a threshold
    base = [str(photos), "--run", str(run_dir), "--format", "csv", "--tta", "flip"]
    assert predict.main(base) == 0
    plain, err = _csv(capsys)
    most_likely = np.where(plain["p_Cat"].astype(float) >= 0.5, "Cat", "Dog")
    assert (plain["predicted"] == most_likely).all() and "rule" not in plain
    assert "decision: the most likely class" in err
    for onnx in ([], ["--onnx"]):
        assert predict.main([*base, "--decision", "Cat-99", *onnx]) == 0
        ok, err = _csv(capsys)
        called_cat = ok["p_Cat"].astype(float) >= threshold
        assert (ok["predicted"] == np.where(called_cat, "Cat", "Dog")).all()
        assert ok["predicted"].nunique() == 2, "the threshold splits these photos"
        assert f"decision: Cat when p_Cat >= {threshold:.3f}, else Dog" in err
        dog = ok[~called_cat].iloc[0]
        p = float(dog["p_Cat"])
        assert dog["rule"] == (
            f"Dog: p_Cat {p:.2f} is below the {threshold:.2f} needed for 99% precision for Cat"
        )
    with pytest.raises(SystemExit):
        predict.main([*base, "--decision", "Cat-95"])
    err = capsys.readouterr().err
    assert "no decision rule 'Cat-95'" in err and "saved rules: Cat-99" in err


def test_the_command_with_onnx_gives_the_same_answers(exported, photos, capsys):
    assert predict.main([str(photos), "--run", str(exported), "--format", "csv"]) == 0
    torch_table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert predict.main([str(photos), "--run", str(exported), "--format", "csv", "--onnx"]) == 0
    out, err = capsys.readouterr()
    onnx_table = pd.read_csv(io.StringIO(out))
    assert "model tiny (model.onnx)" in err and onnx_table["model"].eq("tiny (model.onnx)").all()
    columns = ["path", "predicted", "p_Cat", "p_Dog", "error"]
    pd.testing.assert_frame_equal(onnx_table[columns], torch_table[columns], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "nope"], "no run 'nope'"),
        (["--run", "{run}", "missing.jpg"], "missing.jpg: no such file"),
        (["--run", "{run}", "--device", "nonsense"], "nonsense"),
        (["--run", "{empty}"], "no checkpoint"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(exported, photos, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(run=exported, empty=tmp_path / "empty") for a in args]
    with pytest.raises(SystemExit) as exit_:
        predict.main([str(photos / "Cat" / "0.jpg"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_nothing_readable_exits_1_and_says_why(exported, photos, tmp_path, capsys):
    broken = [str(photos / "Cat" / name) for name in ("empty.jpg", "truncated.jpg")]
    assert predict.main([*broken, "--run", str(exported)]) == 1
    out, err = capsys.readouterr()
    assert "empty" in out and "truncated" in out and "0 of 2 photos classified" in err
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("not a photo")
    assert predict.main([str(tmp_path / "nothing"), "--run", str(exported)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no photos (.bmp .gif" in err


def test_the_module_runs_as_a_command(exported, photos):
    """The console script (``catsdogs-predict``, declared in pyproject.toml) runs ``predict.main``;
    here it runs as ``python -m`` so that this checkout's package is the one tested."""
    assert (
        'catsdogs-predict = "catsdogs_helpers.tools.predict:main"'
        in (REPO / "pyproject.toml").read_text()
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "catsdogs_helpers.tools.predict", str(photos / "Dog"), "--run",
         str(exported), "--format", "csv"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(io.StringIO(done.stdout), keep_default_na=False)
    assert len(table) == 3 + 3 and set(table["predicted"]) <= set(CLASSES)


def test_a_photo_named_with_a_leading_dash_is_a_path_after_double_dash(
    tmp_path, photos, monkeypatch, capsys
):
    save_run(tmp_path / "runs" / "dash")
    monkeypatch.setenv("CATSDOGS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(photos / "Cat")
    shutil.copy("0.jpg", "-dash.jpg")
    assert predict.main(["--run", "dash", "--format", "csv", "--", "-dash.jpg"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert table["path"].tolist() == ["-dash.jpg"] and (table["error"] == "").all()
    assert predict.main(["1.jpg", "--run", "dash", "--format", "csv", "--", "-dash.jpg"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert table["path"].tolist() == ["1.jpg", "-dash.jpg"]
    with pytest.raises(SystemExit) as exit_:
        predict.main(["--run", "dash", "--"])
    assert exit_.value.code == 2 and "PATH" in capsys.readouterr().err
