"""Evaluation: predictions over a whole split, metrics over all samples, and the mistakes.

Metrics are computed from every prediction at once (scikit-learn), never averaged per
batch, so a short last batch weighs what its images weigh.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import Dataset, Subset
from torchvision.transforms.v2 import functional as TF

from .config import TTA_VIEWS, TTAS
from .datasets import make_loader
from .devices import autocast, to_model_input
from .progress import progress_bar
from .transforms import Preprocessing

log = logging.getLogger(__name__)


def tta_views(x: torch.Tensor, size: int, mode: str) -> list[torch.Tensor]:
    """The views of a normalised batch whose predictions are averaged (test-time augmentation).

    - ``none``: the centre ``size`` crop (the batch itself when it is that size already);
    - ``flip``: that crop and its mirror image;
    - ``flip_crops``: the centre and four corner crops, each also mirrored: ten views (what
      torchvision's ``TenCrop`` gives), ten times the compute.
    """
    if mode == "flip_crops":
        crops = list(TF.five_crop(x, [size, size]))
        crops = [crops[4], *crops[:4]]  # the centre first
    else:
        crops = [TF.center_crop(x, [size, size]) if x.shape[-1] != size else x]
    if mode == "none":
        return crops
    return crops + [torch.flip(crop, dims=[3]) for crop in crops]


def probabilities(
    model: nn.Module, images: torch.Tensor, device: torch.device, preprocessing: Preprocessing
) -> torch.Tensor:
    """Class probabilities of a uint8 batch: normalised, then averaged over the TTA views."""
    p = preprocessing
    x = to_model_input(images, device, mean=p.mean, std=p.std)
    views = tta_views(x, p.eval_size, p.tta)
    return torch.stack([model(view).float().softmax(1) for view in views]).mean(0)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    preprocessing: Preprocessing,
    *,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "predicting",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities for every image the loader yields (prepared by
    ``preprocessing.pipeline()``), by :func:`probabilities`.

    Returns ``(probs, labels, positions)``: ``probs`` is ``(N, classes)``; ``positions`` are
    the items' indices in the dataset, so skipped files are accounted for.
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
        with autocast(device, amp_dtype):
            all_probs.append(probabilities(model, images, device, preprocessing).cpu())
        all_labels.append(labels.cpu())
        all_positions.append(torch.as_tensor(positions).cpu())
    if not all_probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return (
        torch.cat(all_probs).numpy(),
        torch.cat(all_labels).numpy(),
        torch.cat(all_positions).numpy(),
    )


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 64,
    progress: bool = False,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`predict` over a cached dataset (a split) prepared by ``preprocessing``, whatever
    transform the dataset was made with (the caller's dataset keeps it): the validation
    split, made with a plain centre crop for training, then gets the very preprocessing the
    test split and your own photos get. ``limit``: only the first ``limit`` items."""
    view = copy.copy(dataset)
    view.transform = preprocessing.pipeline()
    if limit is not None:
        view = Subset(view, range(min(limit, len(view))))
    loader = make_loader(view, batch_size=batch_size, shuffle=False)
    return predict(model, loader, device, preprocessing, amp_dtype=amp_dtype, progress=progress)


def compare_tta(
    model: nn.Module,
    dataset: Dataset,
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 64,
    modes: Sequence[str] = TTAS,
) -> pd.DataFrame:
    """Accuracy and cost of each test-time augmentation on a labelled cached ``dataset``
    (the test split), side by side: one row per mode with its views, accuracy, log loss and
    milliseconds per image (each mode reads the same cached images; one untimed pass over
    a batch first, so the first mode does not pay for the start)."""
    predict_dataset(model, dataset, preprocessing, device, amp_dtype=amp_dtype, limit=batch_size)
    rows = []
    for mode in modes:
        start = time.perf_counter()
        probs, labels, _ = predict_dataset(
            model, dataset, preprocessing.with_tta(mode), device, amp_dtype=amp_dtype,
            batch_size=batch_size,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append({
            "tta": mode, "views": TTA_VIEWS[mode],
            "accuracy": float(skm.accuracy_score(labels, probs.argmax(1))),
            "log_loss": float(skm.log_loss(labels, probs, labels=range(probs.shape[1]))),
            "ms_per_image": 1000 * seconds / max(1, len(labels)),
        })  # fmt: skip
    return pd.DataFrame(rows)


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
