"""Evaluation: predictions over a whole split, metrics over all samples, and the mistakes.

Metrics are computed from every prediction at once (scikit-learn), never averaged per
batch, so a short last batch weighs what its images weigh.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import nn

from .datasets import ImageFileDataset, make_loader
from .devices import autocast, to_model_input
from .files import atomic_path
from .progress import progress_bar
from .validating import check_files

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    progress: bool = False,
    desc: str = "predicting",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities for every image the loader yields.

    Returns ``(probs, labels, positions)``: ``probs`` is ``(N, classes)``; ``positions`` are
    the items' indices in the dataset, so skipped files are accounted for. With ``tta`` the
    probabilities are averaged over each image and its mirror image.
    """
    model.eval()
    all_probs, all_labels, all_positions = [], [], []
    seen = 0
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        images, labels = batch[0], batch[1]
        positions = batch[2] if len(batch) > 2 else torch.arange(seen, seen + len(labels))
        seen += len(labels)
        if len(labels) == 0:
            continue
        x = to_model_input(images, device)
        with autocast(device, amp_dtype):
            logits = model(x).float()
            probs = logits.softmax(1)
            if tta:
                probs = (probs + model(torch.flip(x, dims=[3])).float().softmax(1)) / 2
        all_probs.append(probs.cpu())
        all_labels.append(labels.cpu())
        all_positions.append(torch.as_tensor(positions).cpu())
    if not all_probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return (
        torch.cat(all_probs).numpy(),
        torch.cat(all_labels).numpy(),
        torch.cat(all_positions).numpy(),
    )


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> dict[str, float | int | list]:
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix over all samples.

    With two classes, precision/recall/F1 are for the second class (``class_names[1]``,
    "Dog" here) and ROC AUC uses its probability; with more, they are macro averages and
    ROC AUC is one-vs-rest.
    """
    labels = np.asarray(labels)
    predicted = probs.argmax(1)
    n_classes = len(class_names)
    binary = n_classes == 2
    average = "binary" if binary else "macro"
    present = len(np.unique(labels)) == n_classes
    if not present:
        roc_auc = float("nan")
    elif binary:
        roc_auc = float(skm.roc_auc_score(labels, probs[:, 1]))
    else:
        roc_auc = float(skm.roc_auc_score(labels, probs, multi_class="ovr"))
    kwargs = {"average": average, "zero_division": 0}
    if not binary:
        kwargs["labels"] = list(range(n_classes))
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, **kwargs)),
        "recall": float(skm.recall_score(labels, predicted, **kwargs)),
        "f1": float(skm.f1_score(labels, predicted, **kwargs)),
        "roc_auc": roc_auc,
        "n": int(len(labels)),
        "confusion_matrix": skm.confusion_matrix(
            labels, predicted, labels=list(range(n_classes))
        ).tolist(),
    }


def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson interval for an accuracy measured on ``n`` images.

    It shows how little a small test set says: 9 right out of 10 is compatible with anything
    from about 60 % to 98 %.
    """
    from scipy.stats import norm

    if n <= 0:
        return (0.0, 1.0)
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def predictions_table(
    paths: list[str], labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """One row per image: true and predicted class, confidence, and whether it is right."""
    predicted = probs.argmax(1)
    table = pd.DataFrame(
        {
            "path": paths,
            "label": [class_names[i] if i >= 0 else "" for i in labels],
            "predicted": [class_names[i] for i in predicted],
            "confidence": probs.max(1),
        }
    )
    for i, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, i]
    table["correct"] = table["label"] == table["predicted"]
    return table


def most_confident_mistakes(table: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """The ``k`` wrong predictions the model was surest of: often label noise or odd photos."""
    wrong = table[~table["correct"]]
    return wrong.sort_values("confidence", ascending=False).head(k)


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on the positive class's probability, and what it gives."""

    threshold: float
    precision: float
    recall: float


def threshold_for_precision(
    labels: np.ndarray, scores: np.ndarray, precision: float
) -> OperatingPoint:
    """The threshold with the highest recall among those whose precision reaches
    ``precision`` (binary case); NaN threshold and zero recall when none does."""
    p, r, thresholds = skm.precision_recall_curve(labels, scores)
    ok = np.nonzero(p[:-1] >= precision)[0]
    if not len(ok):
        return OperatingPoint(float("nan"), float("nan"), 0.0)
    best = ok[np.argmax(r[ok])]
    return OperatingPoint(float(thresholds[best]), float(p[best]), float(r[best]))


def find_images(source: str | os.PathLike[str]) -> list[Path]:
    """A single image file, or every image file in a folder (recursively), sorted."""
    source = Path(source).expanduser()
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                      and p.is_file())  # fmt: skip
    raise FileNotFoundError(f"{source} is neither an image file nor a folder")


def predict_files(
    model: nn.Module,
    source: str | os.PathLike[str],
    class_names: list[str],
    device: torch.device,
    *,
    size: int = 128,
    batch_size: int = 64,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    csv_path: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Predict a file or a folder of your own photos; optionally write the table as CSV.

    Paths in the table are relative to the folder (the file name for a single file). Each
    file first gets the validate step's check (:func:`validating.check_image`): a file it
    would reject is not classified, and its ``error`` is the reason the validate step gives
    (the manifest's words: ``truncated``, ``too_small``, ...). ``note`` is the check's note
    for every file. A file that passes the check but still fails to decode gets the error
    ``could not decode``.
    """
    paths = find_images(source)
    folder = Path(source).expanduser() if Path(source).is_dir() else paths[0].parent
    progress = len(paths) > batch_size
    checks = pd.DataFrame(
        check_files([str(p) for p in paths], progress=progress), columns=["ok", "reason", "note"]
    )
    accepted = np.flatnonzero(checks["ok"].to_numpy(dtype=bool))
    dataset = ImageFileDataset([paths[i] for i in accepted], size=size)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False)
    probs, _, positions = predict(
        model, loader, device, amp_dtype=amp_dtype, tta=tta, progress=progress
    )
    table = pd.DataFrame({"path": [p.relative_to(folder).as_posix() for p in paths]})
    _fill_predictions(table, accepted[positions.astype(int)], probs, class_names)
    table["error"] = np.where(
        ~checks["ok"].to_numpy(dtype=bool),
        checks["reason"],
        np.where(table["predicted"] == "", "could not decode", ""),
    )
    table["note"] = checks["note"].fillna("")
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)
        log.info("wrote %d predictions to %s", len(table), csv_path)
    return table


def _fill_predictions(
    table: pd.DataFrame, rows: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> None:
    """Add ``predicted``, ``confidence`` and ``p_<class>`` to ``table``: from ``probs`` at
    ``rows``, empty (NaN) elsewhere."""
    table["predicted"] = ""
    table["confidence"] = np.nan
    for name in class_names:
        table[f"p_{name}"] = np.nan
    if len(rows):
        table.loc[rows, "predicted"] = [class_names[i] for i in probs.argmax(1)]
        table.loc[rows, "confidence"] = probs.max(1)
        for i, name in enumerate(class_names):
            table.loc[rows, f"p_{name}"] = probs[:, i]
