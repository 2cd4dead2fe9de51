"""Predicting photos (files, folders, globs) with a run, each prepared as its test split was."""

from __future__ import annotations

import dataclasses
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
from .datasets import ImageFileDataset, make_loader
from .devices import amp_dtype, pick_device
from .evaluation import predict
from .explaining import grad_cam_images
from .layouts import PHOTO_SUFFIXES
from .models import fold_batch_norms
from .plumbing import write_csv
from .training import CheckpointError, load_model
from .transforms import Preprocessing
from .validating import check_files

log = logging.getLogger(__name__)

PathArg = str | os.PathLike[str]
Sources = PathArg | Sequence[PathArg]


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
    runtime: Callable[[np.ndarray], np.ndarray] | None = None  # uint8 NHWC in, probabilities out


def preprocessing_of(checkpoint: dict) -> Preprocessing:
    """The evaluation preprocessing a checkpoint saved, or for older ones its settings imply."""
    if "preprocessing" in checkpoint:
        return Preprocessing.from_dict(checkpoint["preprocessing"])
    settings = checkpoint.get("settings", {})
    if "cache_size" not in settings or "image_size" not in settings:
        raise CheckpointError("the checkpoint records neither its preprocessing nor its sizes")
    # Of the former recipes, only "fast" averaged over flips by default.
    tta = settings.get("tta") or ("flip" if settings.get("recipe") == "fast" else "none")
    return Preprocessing(settings["cache_size"], settings["image_size"], tta=tta)


def load_classifier(
    run_dir: PathArg, *, device: str | torch.device = "auto", tta: str = "", decision: str = ""
) -> Classifier:
    """A run's ``best.pt`` with its preprocessing (``tta`` replaces its TTA) and calibration
    (or the saved rule ``decision``)."""
    run_dir = Path(run_dir)
    rule = read_decision(run_dir, decision) or Decision()  # a missing rule: before loading
    device = pick_device(device) if isinstance(device, str) else device
    model, checkpoint = load_model(run_dir / "best.pt", device)
    preprocessing = preprocessing_of(checkpoint)
    preprocessing = preprocessing.with_tta(tta) if tta else preprocessing
    names = tuple(checkpoint["class_names"])
    # float32 on a CPU: the answers then match the exported files' to the last digits
    dtype = amp_dtype(device) if device.type == "cuda" else None
    model = fold_batch_norms(model)  # once: each prediction then skips folding
    return Classifier(model, names, preprocessing, rule, device, dtype, run_dir.name)


def _expand(source: PathArg, name_from_folder: bool) -> list[tuple[Path, str]]:
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


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()


def find_images(sources: Sources) -> list[tuple[Path, str]]:
    """The image files of files, folders (recursively) and globs, each once, with its name
    (relative to the folder when one folder is given)."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    out: dict[Path, str] = {}
    for source in items:
        for path, name in _expand(source, name_from_folder=len(items) == 1):
            out.setdefault(path.resolve(), name)
    return list(out.items())


def predictions_path(run_dir: PathArg, source: PathArg) -> Path:
    """``predictions-<name>.csv`` in the run folder, named after the photos predicted."""
    name = re.sub(r"[^\w.-]+", "_", Path(source).name).strip("_.") or "photos"
    return Path(run_dir) / f"predictions-{name}.csv"


def predict_files(
    classifier: Classifier,
    sources: Sources,
    *,
    decision: Decision | None = None,
    batch_size=64,
    csv_path: PathArg | None = None,
) -> pd.DataFrame:
    """Predict photos (:func:`find_images`) by the classifier's decision or ``decision``; a
    rejected photo's reason is in ``error``; optionally write the table as a CSV."""
    if decision is not None:
        classifier = dataclasses.replace(classifier, decision=decision)
    found = find_images(sources)
    checks = pd.DataFrame(
        check_files([str(p) for p, _ in found], progress=len(found) > batch_size),
        columns=["ok", "reason", "note"],
    )
    ok = checks["ok"].to_numpy(dtype=bool)
    accepted = np.flatnonzero(ok)
    probs, positions = _probabilities(classifier, [found[i][0] for i in accepted], batch_size)
    table = pd.DataFrame({"path": [name for _, name in found]})
    _fill_predictions(table, accepted[positions], probs, classifier)
    undecoded = np.where(table["predicted"] == "", "could not decode", "")
    table["error"] = np.where(~ok, checks["reason"], undecoded)
    table["note"] = checks["note"].fillna("")
    table["model"] = classifier.name
    table["file"] = [str(path) for path, _ in found]
    if csv_path is not None:
        write_csv(table, csv_path)
        log.info("wrote %d predictions to %s", len(table), csv_path)
    return table


def _probabilities(c: Classifier, paths: list[Path], batch_size: int) -> tuple[np.ndarray, ...]:
    """Probabilities of ``paths`` and each row's position in ``paths`` (undecodable: none)."""
    p = c.preprocessing
    dataset = ImageFileDataset(paths, size=p.cache_size, transform=p.pipeline())
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False)
    if c.runtime is None:
        progress = len(paths) > batch_size
        probs, _, positions = predict(
            c.model, loader, c.device, p, amp_dtype=c.amp_dtype, progress=progress
        )
        return probs, positions.astype(int)
    batches = [(c.runtime(b[0].numpy()), b[2].numpy()) for b in loader if len(b[0])]
    if not batches:
        return np.zeros((0, 0)), np.zeros(0, dtype=int)
    probs, positions = zip(*batches, strict=True)
    return np.concatenate(probs), np.concatenate(positions).astype(int)


def _fill_predictions(
    table: pd.DataFrame, rows: np.ndarray, probs: np.ndarray, c: Classifier
) -> None:
    """The decision's answers at ``rows``, empty (NaN) elsewhere."""
    names, rule = list(c.class_names), c.decision.has_threshold
    table["predicted"], table["confidence"] = "", np.nan
    table[[f"p_{name}" for name in names]] = np.nan
    if rule:
        table["rule"] = ""  # why, in words
    if len(rows):
        calibrated, chosen = c.decision.calibrate(probs), c.decision.decide(probs, names)
        table.loc[rows, "predicted"] = [names[i] for i in chosen]
        table.loc[rows, "confidence"] = calibrated[np.arange(len(chosen)), chosen]
        for i, name in enumerate(names):
            table.loc[rows, f"p_{name}"] = calibrated[:, i]
        if rule:
            pairs = zip(chosen, calibrated, strict=True)
            table.loc[rows, "rule"] = [c.decision.in_words(names[i], p, names) for i, p in pairs]


@dataclass(frozen=True)
class Explanation:
    """A one-row :func:`predict_files` table, the photo as the model saw it, its Grad-CAM map."""

    table: pd.DataFrame
    image: np.ndarray
    heat_map: np.ndarray


def explain_photo(classifier: Classifier, path: PathArg) -> Explanation:
    """Predict one photo with its Grad-CAM map; a rejected photo, or an exported model, raises
    ``ValueError``."""
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
