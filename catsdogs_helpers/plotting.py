"""Plotting: sample grids, augmentations, training curves, confusion matrix, ROC, heat maps.

Every function returns the matplotlib figure, so a notebook can show it and
:func:`save_figure` can write it into the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .files import atomic_path
from .images import load_square

RIGHT, WRONG = "tab:green", "tab:red"


def show_code(function) -> object:
    """The source of ``function``, highlighted: the very code the package runs."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(function), language="python")


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` (creating the folder) and return the path; written atomically and flushed
    to the disk (:func:`files.atomic_path`), in the format its suffix names (PNG without one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    return path


def _grid(n: int, ncols: int, size: float) -> tuple[plt.Figure, np.ndarray]:
    """A figure of at least ``n`` axes, ``ncols`` wide, each ``size`` inches square."""
    n = max(1, n)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * nrows))
    return fig, np.atleast_1d(axes).ravel()


def show_images(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    *,
    ncols: int = 6,
    size: float = 2.0,
) -> plt.Figure:
    """A grid of uint8 RGB images with optional (coloured) titles."""
    fig, axes = _grid(len(images), ncols, size)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def show_files(
    image_root: str | os.PathLike[str],
    table: pd.DataFrame,
    *,
    title_column: str = "label",
    size: int = 160,
    ncols: int = 6,
) -> plt.Figure:
    """Show the files listed in ``table`` (paths relative to ``image_root``, or absolute)."""
    root = Path(image_root)
    images, titles = [], []
    for _, row in table.iterrows():
        try:
            images.append(load_square(root / row["path"], size))
        except Exception:
            images.append(np.full((size, size, 3), 200, dtype=np.uint8))
        titles.append(str(row[title_column]))
    return show_images(images, titles, ncols=ncols)


def show_predictions(
    image_root: str | os.PathLike[str], table: pd.DataFrame, *, size: int = 160, ncols: int = 6
) -> plt.Figure:
    """Predictions titled "predicted (confidence)", green when right and red when wrong."""
    root = Path(image_root)
    images = [load_square(root / p, size) for p in table["path"]]
    titles, colors = _prediction_titles(table)
    return show_images(images, titles, colors, ncols=ncols)


def _prediction_titles(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """ "predicted (confidence)" per row, and the true label where it differs; green when
    right, red when wrong, black where the table has no (or an empty) ``label``."""
    labels = table["label"] if "label" in table else [""] * len(table)
    titles, colors = [], []
    for predicted, confidence, label in zip(
        table["predicted"], table["confidence"], labels, strict=True
    ):
        wrong = bool(label) and label != predicted
        titles.append(f"{predicted} {confidence:.0%}" + (f"\n(is {label})" if wrong else ""))
        colors.append("black" if not label else WRONG if wrong else RIGHT)
    return titles, colors


def show_grad_cam(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    table: pd.DataFrame | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.45,
    ncols: int = 6,
    size: float = 2.4,
) -> plt.Figure:
    """Each uint8 image with its heat map (values in [0, 1], e.g. from
    :func:`explaining.grad_cam_images`) laid over it: red where the evidence was.

    With a predictions ``table`` (one row per image: ``predicted``, ``confidence`` and, where
    known, ``label``), titled like :func:`show_predictions`.
    """
    if len(maps) != len(images) or (table is not None and len(table) != len(images)):
        rows = "" if table is None else f", {len(table)} table rows"
        raise ValueError(
            f"need one heat map per image (and one table row): {len(images)} images, "
            f"{len(maps)} maps{rows}"
        )
    titles, colors = _prediction_titles(table) if table is not None else (None, None)
    fig, axes = _grid(len(images), ncols, size)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(images):
            continue
        height, width = images[i].shape[:2]
        ax.imshow(images[i])
        # ``extent`` stretches the map over the photo even where their sizes differ.
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        ax.imshow(maps[i], cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, color=colors[i])
    fig.tight_layout()
    return fig


def show_augmentations(
    image: np.ndarray, transform, *, n: int = 11, ncols: int = 6, size: float = 2.0
) -> plt.Figure:
    """The original image followed by ``n`` draws of ``transform`` on it."""
    draws = [transform(image=image)["image"] for _ in range(n)]
    titles = ["original"] + [f"draw {i + 1}" for i in range(n)]
    return show_images([image, *draws], titles, ncols=ncols, size=size)


def show_steps(image: np.ndarray, steps: list, *, ncols: int = 5) -> plt.Figure:
    """The same photo after each ``(name, transform)`` of :func:`transforms.explain_steps`."""
    images = [image] + [transform(image=image)["image"] for _, transform in steps]
    titles = ["original"] + [name for name, _ in steps]
    return show_images(images, titles, ncols=ncols, size=2.6)


def plot_size_histogram(manifest: pd.DataFrame) -> plt.Figure:
    """Widths and heights of the valid images: how much resizing the pipeline does."""
    valid = manifest[manifest["ok"]] if "ok" in manifest else manifest[manifest["width"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, column in zip(axes, ("width", "height"), strict=True):
        for label, group in valid.groupby("label"):
            ax.hist(group[column], bins=40, alpha=0.6, label=str(label))
        ax.set_xlabel(f"{column} (pixels)")
        ax.set_ylabel("images")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and learning rate per epoch, training beside validation.

    Both loss curves are the plain cross-entropy (``train_nll``, ``val_loss``), so they can
    be compared; the label-smoothed loss the optimiser minimised (``train_loss``) never falls
    below about 0.2 and is drawn dashed, for reference."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    epoch = history["epoch"]
    axes[0].plot(epoch, history["train_nll"], "o-", label="train (augmented)")
    axes[0].plot(epoch, history["val_loss"], "o-", label="validation")
    if not np.allclose(history["train_loss"], history["train_nll"]):
        axes[0].plot(epoch, history["train_loss"], "--", color="gray", label="train, smoothed")
    axes[0].set_title("loss (cross-entropy)")
    axes[1].plot(epoch, history["train_acc"], "o-", label="train (augmented)")
    axes[1].plot(epoch, history["val_acc"], "o-", label="validation")
    axes[1].set_title("accuracy")
    axes[2].plot(epoch, history["lr"], "o-")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: list[str]) -> plt.Figure:
    """The confusion matrix with counts (rows: true class, columns: predicted)."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(class_names), 1.2 + 1.2 * len(class_names)))
    skm.ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=ax, colorbar=False, cmap="Blues"
    )
    fig.tight_layout()
    return fig


def plot_roc(labels: np.ndarray, scores: np.ndarray, positive: str) -> plt.Figure:
    """ROC curve for the positive class, with the area under it."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    skm.RocCurveDisplay.from_predictions(labels, scores, ax=ax, name=f"{positive} vs rest")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    fig.tight_layout()
    return fig


def plot_reliability(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Reliability diagrams side by side (e.g. ``{"before": ..., "after scaling": ...}``, each
    a :func:`calibration.reliability_table`): each bin's accuracy against its confidence,
    with how many predictions it holds. On the diagonal is calibrated; below it,
    over-confident."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4), squeeze=False)
    for ax, (title, table) in zip(axes[0], tables.items(), strict=True):
        width = table["high"] - table["low"]
        ax.bar(table["low"], table["accuracy"], width=width, align="edge", alpha=0.7,
               edgecolor="black", label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="calibrated")
        ax.plot(table["confidence"], table["accuracy"], ".", color="black")
        ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
        for _, row in table.iterrows():
            ax.annotate(str(int(row["count"])), (row["low"] + 0.005, 0.02), fontsize=7)
        ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_precision_recall(
    labels: np.ndarray, scores: np.ndarray, positive: str, point=None
) -> plt.Figure:
    """The precision-recall curve of ``positive`` (``labels`` True where the photo is one),
    with a chosen operating point marked (anything with ``threshold``, ``precision`` and
    ``recall``, e.g. :func:`calibration.decision_result`)."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    skm.PrecisionRecallDisplay.from_predictions(labels, scores, ax=ax, name=positive)
    if point is not None and np.isfinite(point.threshold):
        ax.plot([point.recall], [point.precision], "o", color=WRONG,
                label=f"threshold {point.threshold:.3f}")  # fmt: skip
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
