"""Predicting photos with a trained run: files, folders and globs, one answer everywhere.

A :class:`Classifier` bundles what a prediction needs: the model, its class names, the one
evaluation preprocessing saved with it (:class:`~catsdogs_helpers.transforms.Preprocessing`)
and the run's decision (temperature and threshold, :mod:`catsdogs_helpers.calibration`).
:func:`predict_files` prepares each photo exactly as the test split is prepared, so a photo
gets the same probabilities here as in the test results.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .calibration import Decision, read_decision
from .config import RECIPE_DEFAULTS
from .datasets import ImageFileDataset, make_loader
from .devices import amp_dtype, pick_device
from .evaluation import predict
from .explaining import grad_cam_images
from .files import atomic_path
from .layouts import PHOTO_SUFFIXES
from .training import CheckpointError, load_model
from .transforms import Preprocessing
from .validating import check_files

log = logging.getLogger(__name__)

Sources = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Classifier:
    """A trained model and everything needed to use it the way it was tested."""

    model: nn.Module | None  # None for an exported model, which ``runtime`` runs
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    decision: Decision
    device: torch.device
    amp_dtype: torch.dtype | None = None
    name: str = ""  # where it came from (the run's name), shown in every prediction
    #: An exported model (:func:`exporting.load_exported`): a uint8 ``(N, S, S, 3)`` batch
    #: in, probabilities out, normalisation and TTA inside; used instead of ``model``.
    runtime: Callable[[np.ndarray], np.ndarray] | None = None


def preprocessing_of(checkpoint: dict) -> Preprocessing:
    """The evaluation preprocessing saved in a checkpoint. Older checkpoints, which did not
    save it, get the one their settings imply (sizes, the run's or its recipe's TTA)."""
    if "preprocessing" in checkpoint:
        return Preprocessing.from_dict(checkpoint["preprocessing"])
    settings = checkpoint.get("settings", {})
    if "cache_size" not in settings or "image_size" not in settings:
        raise CheckpointError("the checkpoint records neither its preprocessing nor its sizes")
    recipe = RECIPE_DEFAULTS.get(settings.get("recipe", ""))
    tta = settings.get("tta") or (recipe.tta if recipe else "none")
    return Preprocessing(settings["cache_size"], settings["image_size"], tta=tta)


def load_classifier(
    run_dir: str | os.PathLike[str], *, device: str | torch.device = "auto", tta: str = ""
) -> Classifier:
    """The best model of a run (``best.pt``) with its preprocessing and saved decision
    (``decision.json``; without one, the most likely class at temperature 1). ``tta``
    replaces the test-time augmentation saved with the run ("" keeps it)."""
    run_dir = Path(run_dir)
    device = pick_device(device) if isinstance(device, str) else device
    model, checkpoint = load_model(run_dir / "best.pt", device)
    preprocessing = preprocessing_of(checkpoint)
    if tta:
        preprocessing = preprocessing.with_tta(tta)
    return Classifier(
        model=model, class_names=tuple(checkpoint["class_names"]), preprocessing=preprocessing,
        decision=read_decision(run_dir) or Decision(), device=device,
        amp_dtype=amp_dtype(device), name=run_dir.name,
    )  # fmt: skip


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()


def _expand(source: str | os.PathLike[str], name_from_folder: bool) -> list[tuple[Path, str]]:
    """The image files of one source with the name each is shown under."""
    path = Path(source).expanduser()
    if path.is_file():
        return [(path, os.fspath(source))]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if _is_image(p))
        return [(p, p.relative_to(path).as_posix() if name_from_folder else str(p)) for p in found]
    matches = sorted(glob.glob(os.path.expanduser(os.fspath(source)), recursive=True))
    if not matches:
        raise FileNotFoundError(f"{source}: no such file or folder, and no file matches it")
    return [(Path(m), m) for m in matches if _is_image(Path(m))]


def find_images(sources: Sources) -> list[tuple[Path, str]]:
    """Every image file of ``sources`` (files, folders searched recursively, globs such as
    ``photos/*.jpg`` or ``**/*.png``), with the name it is shown under: relative to the
    folder when one folder is given, the path otherwise. Duplicates are listed once."""
    many = not isinstance(sources, str | os.PathLike)
    items = list(sources) if many else [sources]
    out: dict[Path, str] = {}
    for source in items:
        for path, name in _expand(source, name_from_folder=len(items) == 1):
            out.setdefault(path.resolve(), name)
    return [(path, name) for path, name in out.items()]


def predictions_path(run_dir: str | os.PathLike[str], source: str | os.PathLike[str]) -> Path:
    """``predictions-<name>.csv`` in the run folder, named after the photo, folder or pattern
    predicted (characters a file name cannot hold become ``_``)."""
    name = re.sub(r"[^\w.-]+", "_", Path(source).name).strip("_.") or "photos"
    return Path(run_dir) / f"predictions-{name}.csv"


def predict_files(
    classifier: Classifier,
    sources: Sources,
    *,
    batch_size: int = 64,
    csv_path: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Predict photos (see :func:`find_images`); optionally write the table as CSV.

    Each file first gets the validate step's check (:func:`validating.check_files`): a file
    it would reject is not classified, and its ``error`` is the validate step's reason
    (``truncated``, ``too_small``, ...); a file that passes but still fails to decode gets
    ``could not decode``. Columns: ``path`` (as shown), ``predicted`` (by the run's decision:
    its threshold where it has one), ``confidence`` and ``p_<class>`` (after temperature
    scaling), ``error``, ``note`` (the check's note), ``model`` (the classifier's name) and
    ``file`` (the full path).
    """
    found = find_images(sources)
    checks = pd.DataFrame(
        check_files([str(p) for p, _ in found], progress=len(found) > batch_size),
        columns=["ok", "reason", "note"],
    )
    accepted = np.flatnonzero(checks["ok"].to_numpy(dtype=bool))
    probs, positions = _probabilities(classifier, [found[i][0] for i in accepted], batch_size)
    table = pd.DataFrame({"path": [name for _, name in found]})
    _fill_predictions(table, accepted[positions], probs, classifier)
    table["error"] = np.where(
        ~checks["ok"].to_numpy(dtype=bool),
        checks["reason"],
        np.where(table["predicted"] == "", "could not decode", ""),
    )
    table["note"] = checks["note"].fillna("")
    table["model"] = classifier.name
    table["file"] = [str(path) for path, _ in found]
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)
        log.info("wrote %d predictions to %s", len(table), csv_path)
    return table


def _probabilities(
    classifier: Classifier, paths: list[Path], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the files ``paths``, prepared as the test split is, and the position
    in ``paths`` of each row (files that fail to decode have none)."""
    p = classifier.preprocessing
    dataset = ImageFileDataset(paths, size=p.cache_size, transform=p.pipeline())
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False)
    if classifier.runtime is not None:
        return _run_exported(classifier.runtime, loader)
    probs, _, positions = predict(
        classifier.model, loader, classifier.device, p, amp_dtype=classifier.amp_dtype,
        progress=len(paths) > batch_size,
    )  # fmt: skip
    return probs, positions.astype(int)


def _run_exported(
    runtime: Callable[[np.ndarray], np.ndarray], loader
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_probabilities` with an exported model: the same batches, the same positions."""
    probs, positions = [], []
    for batch in loader:
        if len(batch[0]):  # a batch whose files all failed to decode has no positions
            probs.append(runtime(batch[0].numpy()))
            positions.append(batch[2].numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=int)
    return np.concatenate(probs), np.concatenate(positions).astype(int)


def _fill_predictions(
    table: pd.DataFrame, rows: np.ndarray, probs: np.ndarray, classifier: Classifier
) -> None:
    """Add ``predicted``, ``confidence`` and ``p_<class>`` to ``table`` (a table this module
    just made): the decision's answers at ``rows``, empty (NaN) elsewhere."""
    names = list(classifier.class_names)
    table["predicted"] = ""
    table["confidence"] = np.nan
    for name in names:
        table[f"p_{name}"] = np.nan
    if len(rows):
        calibrated = classifier.decision.calibrate(probs)
        chosen = classifier.decision.decide(probs, names)
        table.loc[rows, "predicted"] = [names[i] for i in chosen]
        table.loc[rows, "confidence"] = calibrated[np.arange(len(chosen)), chosen]
        for i, name in enumerate(names):
            table.loc[rows, f"p_{name}"] = calibrated[:, i]


@dataclass(frozen=True)
class Explanation:
    """One photo's prediction (a one-row :func:`predict_files` table), the photo as the model
    saw it (uint8) and its Grad-CAM map for the predicted class."""

    table: pd.DataFrame
    image: np.ndarray
    heat_map: np.ndarray


def explain_photo(classifier: Classifier, path: str | os.PathLike[str]) -> Explanation:
    """Predict one photo and show where the evidence for the answer was (Grad-CAM).

    A photo the validate step rejects raises ``ValueError`` with its reason. Needs the
    PyTorch model (an exported one has no gradients to explain with).
    """
    if classifier.model is None:
        raise ValueError("explaining needs the PyTorch model: load_classifier(), not an export")
    table = predict_files(classifier, path)
    if len(table) != 1 or table.loc[0, "error"]:
        reason = table.loc[0, "error"] if len(table) == 1 else "not one image file"
        raise ValueError(f"{path}: {reason}")
    image = classifier.preprocessing.read(path)
    target = [classifier.class_names.index(table.loc[0, "predicted"])]
    heat_map = grad_cam_images(classifier.model, image[None], classifier.device, target=target)
    return Explanation(table, image, heat_map[0])
