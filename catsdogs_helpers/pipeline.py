"""The series' steps as calls that reuse what exists and make what is missing.

Each notebook can run on its own in a fresh kernel (Colab users often open notebook 04
first): ``ensure_split(cfg)`` downloads, validates and splits only when those files are not
there yet, with the same helpers notebooks 01 and 02 use.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import RunConfig, runs_dir
from .datasets import ImageCache, build_cache, make_loader, split_datasets
from .devices import amp_dtype, pick_device
from .downloading import find_image_root, prepare_dataset
from .files import atomic_path
from .models import create_model
from .splitting import SPLITS, class_names, read_split, save_split, split_dataset
from .training import seed_everything, train
from .transforms import eval_transforms, train_transforms
from .validating import read_manifest, validate_folder

log = logging.getLogger(__name__)


def setup_logging(level: int = logging.INFO) -> None:
    """Show the package's progress messages in the notebook (once, however often called)."""
    logger = logging.getLogger("catsdogs_helpers")
    logger.setLevel(level)
    if not any(getattr(h, "_catsdogs", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._catsdogs = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def manifest_path(cfg: RunConfig) -> Path:
    return cfg.data_dir / "manifest.csv"


def split_path(cfg: RunConfig) -> Path:
    return cfg.run_dir / "split.csv"


def ensure_images(cfg: RunConfig, *, progress: bool = True) -> Path:
    """The extracted image folder, downloading and extracting it first if needed."""
    return prepare_dataset(
        cfg.data_dir, cfg.dataset_url, sha256=cfg.dataset_sha256, progress=progress
    )


def ensure_manifest(cfg: RunConfig, *, progress: bool = True) -> pd.DataFrame:
    """The validation manifest; only new or changed files are checked again."""
    image_root = find_image_root(cfg.data_dir) or ensure_images(cfg, progress=progress)
    return validate_folder(image_root, manifest_path(cfg), progress=progress)


def ensure_split(cfg: RunConfig, *, progress: bool = True) -> pd.DataFrame:
    """The run's split file, made (with the seed and limit of ``cfg``) when missing."""
    path = split_path(cfg)
    if path.is_file() and not cfg.overwrite:
        return read_split(path)
    manifest = (
        read_manifest(manifest_path(cfg))
        if manifest_path(cfg).is_file() and find_image_root(cfg.data_dir)
        else ensure_manifest(cfg, progress=progress)
    )
    split = split_dataset(manifest, seed=cfg.seed, limit_per_class=cfg.limit_per_class)
    save_split(split, path, overwrite=cfg.overwrite)
    return split


def ensure_cache(cfg: RunConfig, split: pd.DataFrame, *, progress: bool = True) -> ImageCache:
    """The decoded uint8 cache of every image in the train, val and test splits."""
    image_root = find_image_root(cfg.data_dir) or ensure_images(cfg, progress=progress)
    used = split[split["split"].isin(SPLITS)]
    return build_cache(image_root, used, cfg.data_dir / "cache", cfg.cache_size,
                       progress=progress)  # fmt: skip


def eval_size(cfg: RunConfig) -> int:
    """The side of evaluation images: a centre crop the size of the training crops."""
    return cfg.image_size


def make_datasets(cfg: RunConfig, split: pd.DataFrame, cache: ImageCache) -> dict:
    """Train, val and test datasets with the recipe's transforms (seeded with ``cfg.seed``)."""
    evaluation = eval_transforms(eval_size(cfg), cfg.cache_size)
    transforms = {
        "train": train_transforms(cfg.image_size, cfg.cache_size, cfg.recipe.augment, cfg.seed),
        "val": evaluation,
        "test": evaluation,
    }
    return split_datasets(cache, split, class_names(split), transforms)


def make_loaders(cfg: RunConfig, datasets: dict) -> dict:
    """Seeded loaders: the training one shuffles and drops a last batch too small to help."""
    loaders = {}
    for name, dataset in datasets.items():
        train = name == "train"
        loaders[name] = make_loader(
            dataset,
            batch_size=cfg.batch_size if train else cfg.batch_size * 2,
            shuffle=train,
            num_workers=cfg.num_workers if train else 0,
            seed=cfg.seed,
            drop_last=train and len(dataset) > cfg.batch_size,
        )
    return loaders


def progressive_sizes(cfg: RunConfig, stages: int = 5, start: float = 2 / 3) -> list[int]:
    """Training image sides, smallest first: ``stages`` steps from ``start`` x IMAGE_SIZE to
    IMAGE_SIZE (multiples of 8). Small images early are cheap and teach coarse shapes; the
    full size at the end matches what the model is evaluated on."""
    if not cfg.recipe.progressive:
        return [cfg.image_size]
    first = max(32, start * cfg.image_size)
    sizes = np.linspace(first, cfg.image_size, stages)
    return sorted({min(cfg.image_size, int(round(s / 8) * 8)) for s in sizes[:-1]}
                  | {cfg.image_size})  # fmt: skip


def epoch_transform(cfg: RunConfig):
    """``epoch -> training transform`` for progressive resizing (None when the recipe has
    none): the stages of :func:`progressive_sizes` spread evenly over the epochs."""
    sizes = progressive_sizes(cfg)
    if len(sizes) == 1:
        return None

    def transform(epoch: int):
        size = sizes[min(len(sizes) - 1, epoch * len(sizes) // cfg.epochs)]
        return train_transforms(cfg.image_size, cfg.cache_size, cfg.recipe.augment, cfg.seed,
                                output_size=size)  # fmt: skip

    return transform


def training_settings(cfg: RunConfig) -> dict:
    """The recipe's training settings for :func:`training.train`, with the learning rate
    scaled to the batch size (linear scaling for SGD)."""
    recipe = cfg.recipe
    lr = recipe.lr
    if recipe.optimizer == "sgd":
        lr = recipe.lr * cfg.batch_size / recipe.batch_size
    return {
        "epochs": cfg.epochs,
        "optimizer": recipe.optimizer,
        "lr": lr,
        "weight_decay": recipe.weight_decay,
        "schedule": recipe.schedule,
        "label_smoothing": recipe.label_smoothing,
        "early_stopping": recipe.early_stopping,
        "epoch_transform": epoch_transform(cfg),
    }


def train_run(cfg: RunConfig, *, progress: bool = True) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Everything notebook 04 does, in one call: split, cache, loaders, model, training.

    A finished run with the same settings is loaded, not trained again.
    """
    split = ensure_split(cfg, progress=progress)
    cache = ensure_cache(cfg, split, progress=progress)
    loaders = make_loaders(cfg, make_datasets(cfg, split, cache))
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    names = class_names(split)
    model = create_model(cfg.model_name, len(names), pretrained=cfg.pretrained)
    history = train(
        model,
        loaders["train"],
        loaders["val"],
        run_dir=cfg.run_dir,
        class_names=names,
        params=cfg.to_dict(),
        device=device,
        amp_dtype=amp_dtype(device),
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        progress=progress,
        **training_settings(cfg),
    )
    return model, history


def runs_table() -> pd.DataFrame:
    """One row per run folder: recipe, model, epochs, best validation and test accuracy, time."""
    rows = []
    for summary_path in sorted(runs_dir().glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        params = summary.get("params", {})
        metrics_path = summary_path.with_name("metrics.json")
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        rows.append(
            {
                "run": summary_path.parent.name,
                "recipe": params.get("recipe"),
                "model": params.get("model_name"),
                "image_size": params.get("image_size"),
                "epochs_run": summary.get("epochs_run"),
                "finished": summary.get("finished"),
                "best_val_acc": summary.get("best_val_acc"),
                "test_accuracy": metrics.get("test_accuracy"),
                "train_minutes": round(summary.get("train_seconds", 0) / 60, 1),
            }
        )
    return pd.DataFrame(rows)


def dataset_paths(cache: ImageCache, dataset) -> np.ndarray:
    """The file path (relative to the image root) of each item of a cached dataset."""
    return cache.rows["path"].to_numpy()[dataset.indices]


def write_metrics(cfg: RunConfig, metrics: dict) -> Path:
    """Write ``runs/<run>/metrics.json``: test metrics, epochs run, time, and the settings.

    Writing the same results again is fine (evaluation is deterministic); different results
    for the same run are refused unless ``cfg.overwrite``.
    """
    history = pd.read_csv(cfg.run_dir / "history.csv")
    seconds = float(history["seconds"].sum()) if "seconds" in history else math.nan
    payload = {
        **{f"test_{k}": v for k, v in metrics.items() if k != "n"},
        "n_test": metrics["n"],
        "epochs_run": int(len(history)),
        "train_seconds": seconds,
        "best_val_acc": float(history["val_acc"].max()) if len(history) else math.nan,
        "params": cfg.to_dict(),
        "torch": torch.__version__,
    }
    path = cfg.run_dir / "metrics.json"
    if path.is_file() and not cfg.overwrite:
        before = json.loads(path.read_text())
        changed = [k for k in payload if k.startswith("test_") and before.get(k) != payload[k]]
        if changed:
            raise FileExistsError(
                f"{path} holds other results ({', '.join(changed)} differ). Use a new "
                "RUN_NAME, or OVERWRITE=True to replace them."
            )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    return path
