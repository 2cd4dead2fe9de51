"""Evaluation: a split's predictions, metrics over all of them at once (never averaged per
batch, so a short last batch weighs what its images weigh), and the mistakes."""

from __future__ import annotations

import copy
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
from .models import fold_batch_norms, forward_in_chunks
from .plumbing import progress_bar
from .transforms import Preprocessing


def tta_views(x: torch.Tensor, size: int, mode: str) -> list[torch.Tensor]:
    """The test-time augmentation views of a normalised batch: the centre crop (``none``), and
    its mirror (``flip``), or the centre and corner crops and their mirrors (``flip_crops``)."""
    if mode == "flip_crops":
        crops = [centre_crop(x, size), *TF.five_crop(x, [size, size])[:4]]  # the centre first
    else:
        crops = [centre_crop(x, size)]
    if mode == "none":
        return crops
    return crops + [torch.flip(crop, dims=[3]) for crop in crops]


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` square of a batch, placed as Albumentations' ``CenterCrop`` places
    it (offsets rounded down), so that every TTA mode's centre view is the same crop."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


#: Where each mode's views sit among those of ``flip_crops`` (centre, corners, then mirrors).
FLIP_CROPS_INDEX = {"none": [0], "flip": [0, 5], "flip_crops": list(range(10))}


def probabilities(
    model: nn.Module, images: torch.Tensor, device: torch.device, preprocessing: Preprocessing
) -> torch.Tensor:
    """Class probabilities of a uint8 batch: normalised, then averaged over the TTA views."""
    return view_probabilities(model, images, device, preprocessing).mean(1)


def view_probabilities(
    model: nn.Module, images: torch.Tensor, device: torch.device, preprocessing: Preprocessing
) -> torch.Tensor:
    """``(images, views, classes)``: each TTA view's class probabilities of a uint8 batch."""
    p = preprocessing
    x = to_model_input(images, device, mean=p.mean, std=p.std)
    views = tta_views(x, p.eval_size, p.tta)
    return torch.stack([forward_in_chunks(model, v).float().softmax(1) for v in views], dim=1)


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
    per_view: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, labels, positions)`` of every image the loader yields (skipped files: none);
    with ``per_view``, ``probs`` keeps each TTA view's (images, views, classes)."""
    model = fold_batch_norms(model)  # eval mode, each batch norm folded into its conv
    batches, seen = [], 0
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        images, labels = batch[0], batch[1]
        positions = batch[2] if len(batch) > 2 else torch.arange(seen, seen + len(labels))
        seen += len(labels)
        if len(labels) == 0:
            continue
        with autocast(device, amp_dtype):
            probs = view_probabilities(model, images, device, preprocessing).cpu()
        probs = probs if per_view else probs.mean(1)
        batches.append((probs, labels.cpu(), torch.as_tensor(positions).cpu()))
    if not batches:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return tuple(torch.cat(parts).numpy() for parts in zip(*batches, strict=True))


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
    per_view: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`predict` over (the first ``limit`` items of) a split prepared by ``preprocessing``."""
    view = copy.copy(dataset)
    view.transform = preprocessing.pipeline()
    if limit is not None:
        view = Subset(view, range(min(limit, len(view))))
    loader = make_loader(view, batch_size=batch_size, shuffle=False)
    options = {"amp_dtype": amp_dtype, "progress": progress, "per_view": per_view}
    return predict(model, loader, device, preprocessing, **options)


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
    """Views, accuracy, log loss and ms per image of each TTA mode on a labelled ``dataset``,
    from one pass over the ten views of ``flip_crops``, which hold every other mode's."""
    # One untimed batch first, so that the time measured is not the start's.
    predict_dataset(model, dataset, preprocessing, device, amp_dtype=amp_dtype, limit=batch_size)
    start = time.perf_counter()
    every_view = preprocessing.with_tta("flip_crops")
    views, labels, _ = predict_dataset(
        model,
        dataset,
        every_view,
        device,
        amp_dtype=amp_dtype,
        batch_size=batch_size,
        per_view=True,
    )
    seconds = time.perf_counter() - start
    ms_per_view = 1000 * seconds / max(1, len(labels) * TTA_VIEWS["flip_crops"])
    rows = []
    for mode in modes:
        probs = views[:, FLIP_CROPS_INDEX[mode]].mean(1)
        accuracy = float(skm.accuracy_score(labels, probs.argmax(1)))
        log_loss = float(skm.log_loss(labels, probs, labels=range(probs.shape[1])))
        rows.append((mode, TTA_VIEWS[mode], accuracy, log_loss, ms_per_view * TTA_VIEWS[mode]))
    return pd.DataFrame(rows, columns=["tta", "views", "accuracy", "log_loss", "ms_per_image"])


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> dict[str, float | int | list]:
    """Accuracy, precision, recall, F1, ROC AUC, count and confusion matrix of all samples:
    for ``class_names[1]`` with two classes, else macro averages and one-vs-rest ROC AUC."""
    labels = np.asarray(labels)
    predicted = probs.argmax(1)
    classes = list(range(len(class_names)))
    binary = len(classes) == 2
    roc_auc = float("nan")
    if len(np.unique(labels)) == len(classes):
        scores = probs[:, 1] if binary else probs
        roc_auc = float(skm.roc_auc_score(labels, scores, multi_class="ovr"))
    average = {"average": "binary"} if binary else {"average": "macro", "labels": classes}
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, zero_division=0, **average
    )
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc,
        "n": int(len(labels)),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson interval of an accuracy on ``n`` images (9 of 10 right: about 60 % to 98 %)."""
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
    label = [class_names[i] if i >= 0 else "" for i in labels]
    predicted = [class_names[i] for i in probs.argmax(1)]
    table = pd.DataFrame({"path": paths, "label": label, "predicted": predicted})
    table["confidence"] = probs.max(1)
    for i, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, i]
    table["correct"] = table["label"] == table["predicted"]
    return table


def most_confident_mistakes(table: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """The ``k`` wrong predictions the model was surest of: often label noise or odd photos."""
    wrong = table[~table["correct"]]
    return wrong.sort_values("confidence", ascending=False).head(k)
