from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from catsdogs_helpers import calibration, evaluation, predicting
from catsdogs_helpers.transforms import Preprocessing


def test_metrics_count_every_sample_not_batches():
    labels = np.array([0] * 6 + [1] * 4)
    probs = np.zeros((10, 2))
    predicted = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 0])  # 1 FP, 1 FN
    probs[np.arange(10), predicted] = 0.9
    probs[np.arange(10), 1 - predicted] = 0.1
    m = evaluation.classification_metrics(labels, probs, ["Cat", "Dog"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["confusion_matrix"] == [[5, 1], [1, 3]]
    assert m["n"] == 10 and 0 <= m["roc_auc"] <= 1


def test_metrics_for_three_classes():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    m = evaluation.classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert np.array(m["confusion_matrix"]).shape == (3, 3)


def test_accuracy_interval_shows_small_test_sets_measure_little():
    low10, high10 = evaluation.accuracy_interval(0.9, 10)
    low, high = evaluation.accuracy_interval(0.9, 2500)
    assert low10 < 0.65 and high10 > 0.95
    assert high - low < 0.03


class _Mean(nn.Module):
    """Scores "Dog" by mean brightness: bright images are dogs."""

    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))
        return torch.stack([-s, s], 1)


def _classifier(model: nn.Module, decision=None, size: int = 32) -> predicting.Classifier:
    return predicting.Classifier(
        model, ("Cat", "Dog"), Preprocessing(cache_size=size + 4, eval_size=size),
        decision or calibration.Decision(), torch.device("cpu"), name="mean",
    )  # fmt: skip


def test_predict_files_writes_csv_and_reports_broken_files(tmp_path, petimages):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("0.jpg", "1.jpg", "truncated.jpg"):
        (folder / name).write_bytes((petimages / "Cat" / name).read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    table = predicting.predict_files(
        _classifier(_Mean()), folder, csv_path=tmp_path / "out" / "predictions.csv"
    )
    assert table["path"].tolist() == ["0.jpg", "1.jpg", "truncated.jpg"], "relative to the folder"
    assert table["error"].tolist() == ["", "", "truncated"], "the validate step's reason"
    assert table.loc[:1, "predicted"].isin(["Cat", "Dog"]).all()
    np.testing.assert_allclose(table.loc[:1, ["p_Cat", "p_Dog"]].sum(axis=1), 1, rtol=1e-5)
    assert (tmp_path / "out" / "predictions.csv").read_text().startswith("path,predicted")
    assert (table["model"] == "mean").all()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        predicting.find_images(tmp_path / "nowhere")


def test_most_confident_mistakes_come_first():
    table = evaluation.predictions_table(
        ["a", "b", "c"], np.array([0, 0, 1]),
        np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]]), ["Cat", "Dog"],
    )  # fmt: skip
    assert evaluation.most_confident_mistakes(table)["path"].tolist() == ["a", "b"]
