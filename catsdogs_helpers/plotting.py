"""Plotting: image grids, augmentations, training curves, evaluation plots, heat maps."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .images import load_square
from .plumbing import atomic_path

RIGHT, WRONG = "tab:green", "tab:red"
Images = Sequence[np.ndarray]
Texts = Sequence[str] | None
Folder = str | os.PathLike[str]
Table = pd.DataFrame


def show_code(function) -> object:
    """The source of ``function``, highlighted: the very code the package runs."""
    from IPython.display import Code

    return Code(inspect.getsource(function), language="python")


def save_figure(fig: plt.Figure, path: Folder) -> Path:
    """Save ``fig`` atomically in the format its suffix names (PNG without one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    return path


def show_images(
    images: Images, titles: Texts = None, colors: Texts = None, *, ncols: int = 6, size: float = 2.0
) -> plt.Figure:
    """A grid of uint8 RGB images with optional (coloured) titles."""
    ncols = min(ncols, max(1, len(images)))
    nrows = int(np.ceil(max(1, len(images)) / ncols))
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    height = size * nrows + (0.1 + 0.2 * lines) * nrows  # room for every title's lines
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, height))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
        if i < len(images) and titles is not None:
            ax.set_title(titles[i], fontsize=9, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def show_files(
    image_root: Folder,
    table: Table,
    *,
    title_column: str = "label",
    size: int = 160,
    ncols: int = 6,
) -> plt.Figure:
    """The files of ``table`` (paths relative to ``image_root``); grey where one is unreadable."""
    images = []
    for path in table["path"]:
        try:
            images.append(load_square(Path(image_root) / path, size))
        except Exception:
            images.append(np.full((size, size, 3), 200, dtype=np.uint8))
    return show_images(images, [str(t) for t in table[title_column]], ncols=ncols)


def show_predictions(
    image_root: Folder, table: Table, *, size: int = 160, ncols: int = 6
) -> plt.Figure:
    """Predictions titled "predicted confidence", green when right and red when wrong."""
    images = [load_square(Path(image_root) / p, size) for p in table["path"]]
    return show_images(images, *_prediction_titles(table), ncols=ncols)


def _prediction_titles(table: Table) -> tuple[list[str], list[str]]:
    labels = table["label"] if "label" in table else [""] * len(table)
    titles, colors = [], []
    rows = zip(table["predicted"], table["confidence"], labels, strict=True)
    for predicted, confidence, label in rows:
        wrong = bool(label) and label != predicted
        titles.append(f"{predicted} {confidence:.0%}" + (f"\n(is {label})" if wrong else ""))
        colors.append("black" if not label else WRONG if wrong else RIGHT)
    return titles, colors


def show_grad_cam(
    images: Images,
    maps: Images,
    table: Table | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.45,
    ncols: int = 6,
    size: float = 2.4,
) -> plt.Figure:
    """Each image under its heat map (in [0, 1]), titled like :func:`show_predictions`."""
    if len(maps) != len(images) or (table is not None and len(table) != len(images)):
        rows = "" if table is None else f", {len(table)} table rows"
        raise ValueError(
            f"need one heat map per image (and one table row): {len(images)} images, "
            f"{len(maps)} maps{rows}"
        )
    titles, colors = _prediction_titles(table) if table is not None else (None, None)
    fig = show_images(images, titles, colors, ncols=ncols, size=size)
    for ax, image, heat in zip(fig.axes, images, maps, strict=False):
        extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
        ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent)
    return fig


def show_augmentations(
    image: np.ndarray, transform, *, n: int = 11, ncols: int = 6, size: float = 2.0
) -> plt.Figure:
    """The original image followed by ``n`` draws of ``transform`` on it."""
    draws = [transform(image=image)["image"] for _ in range(n)]
    titles = ["original"] + [f"draw {i + 1}" for i in range(n)]
    return show_images([image, *draws], titles, ncols=ncols, size=size)


def show_transforms(image: np.ndarray, transforms: list, *, ncols: int = 5) -> plt.Figure:
    """The same photo after each ``(name, transform)`` of :func:`transforms.one_at_a_time`."""
    images = [image] + [transform(image=image)["image"] for _, transform in transforms]
    titles = ["original"] + [name for name, _ in transforms]
    return show_images(images, titles, ncols=ncols, size=2.6)


def plot_size_histogram(manifest: Table) -> plt.Figure:
    """Widths and heights of the valid images: how much resizing the pipeline does."""
    valid = manifest[manifest["ok"]] if "ok" in manifest else manifest[manifest["width"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, column in zip(axes, ("width", "height"), strict=True):
        for label, group in valid.groupby("label"):
            ax.hist(group[column], bins=40, alpha=0.6, label=str(label))
        ax.set(xlabel=f"{column} (pixels)", ylabel="images")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history: Table) -> plt.Figure:
    """Loss, accuracy and learning rate per epoch (the label-smoothed loss dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    epoch = history["epoch"]
    for ax, train, val in ((axes[0], "train_nll", "val_loss"), (axes[1], "train_acc", "val_acc")):
        ax.plot(epoch, history[train], "o-", label="train (augmented)")
        ax.plot(epoch, history[val], "o-", label="validation")
    if not np.allclose(history["train_loss"], history["train_nll"]):
        axes[0].plot(
            epoch, history["train_loss"], "--", color="gray", label="train, with label smoothing"
        )
    axes[2].plot(epoch, history["lr"], "o-")
    titles = ("loss (cross-entropy)", "accuracy", "learning rate (end of epoch)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: list[str]) -> plt.Figure:
    """The confusion matrix with counts (rows: true class, columns: predicted)."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(class_names), 1.2 + 1.2 * len(class_names)))
    display = skm.ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names)
    display.plot(ax=ax, colorbar=False, cmap="Blues")
    fig.tight_layout()
    return fig


def plot_roc(
    is_positive: np.ndarray, scores: np.ndarray, positive: str, negative: str
) -> plt.Figure:
    """ROC curve, with its area, of ``positive`` against ``negative`` (a class or "the rest")."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    skm.RocCurveDisplay.from_predictions(is_positive, scores, ax=ax, name=positive, pos_label=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(
        xlabel=f"false positive rate ({negative} called {positive})",
        ylabel=f"true positive rate ({positive} found)",
        title=f"ROC: {positive} against {negative}",
    )
    fig.tight_layout()
    return fig


def plot_reliability(tables: dict[str, Table]) -> plt.Figure:
    """Reliability diagrams side by side (``{title: calibration.reliability_table(...)}``)."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4), squeeze=False)
    for ax, (title, table) in zip(axes[0], tables.items(), strict=True):
        low, accuracy = table["low"], table["accuracy"]
        bar = {"align": "edge", "alpha": 0.7, "edgecolor": "black", "label": "accuracy"}
        ax.bar(low, accuracy, width=table["high"] - low, **bar)
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="calibrated")
        ax.plot(table["confidence"], accuracy, ".", color="black")
        ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
        for start, count in zip(low, table["count"], strict=True):
            ax.annotate(str(int(count)), (start + 0.005, 0.02), fontsize=7)
        ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_precision_recall(
    labels: np.ndarray, scores: np.ndarray, positive: str, point=None
) -> plt.Figure:
    """The precision-recall curve of ``positive`` (``labels`` True for one), ``point`` marked."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    labels = np.asarray(labels, dtype=bool)
    skm.PrecisionRecallDisplay.from_predictions(
        labels, scores, ax=ax, name=positive, pos_label=True
    )
    ax.set(
        xlabel=f"recall ({positive} found)",
        ylabel=f"precision (right when called {positive})",
        title=f"precision and recall for {positive}",
    )
    if point is not None and np.isfinite(point.threshold):
        label = f"threshold {point.threshold:.3f}"
        ax.plot([point.recall], [point.precision], "o", color=WRONG, label=label)
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
