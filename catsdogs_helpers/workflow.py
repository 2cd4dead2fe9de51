"""The series' work as calls that reuse what exists and make what is missing, so each
notebook can run on its own in a fresh kernel."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd
import torch

from . import runs
from .config import RunConfig, from_parameters, seed_for
from .datasets import CachedImageDataset, ImageCache, build_cache, make_loader, split_datasets
from .devices import amp_dtype, pick_device
from .downloading import prepare_dataset
from .layouts import find_image_root
from .models import create_model, whiten_first_layer
from .splitting import SPLITS, class_names, read_split, save_split, split_dataset
from .tools import distributed
from .training import (
    FORWARD_COST,
    fit,
    make_optimizer,
    make_scheduler,
    measure_training_speed,
    seed_everything,
    training_seconds,
)
from .transforms import PIPELINES, describe_pipeline, eval_transforms, preprocessing_for
from .transforms import train_pipeline as make_train_pipeline
from .validating import validate_folder

log = logging.getLogger(__name__)


def setup_logging(level: int = logging.INFO) -> None:
    """Show the package's log messages on stdout (one handler, however often called)."""
    logger = logging.getLogger("catsdogs_helpers")
    logger.setLevel(level)
    if not any(getattr(h, "_catsdogs", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._catsdogs = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def start(namespace: Mapping[str, Any]) -> RunConfig:
    """The cell after every ``parameters`` cell: logging on, and the run's checked
    configuration (:func:`config.from_parameters`), its folders printed."""
    setup_logging()
    cfg = from_parameters(namespace)
    cfg = saved_plan(cfg) or cfg  # TIME_BUDGET's epochs and side, once planned
    print(f"data: {cfg.data_dir}\nrun:  {cfg.run_dir}")
    return cfg


def manifest_path(cfg: RunConfig) -> Path:
    return cfg.data_dir / "manifest.csv"


def split_path(cfg: RunConfig) -> Path:
    return cfg.run_dir / "split.csv"


def ensure_images(cfg: RunConfig, *, progress: bool = True) -> Path:
    """The extracted image folder, downloading and extracting it first if needed."""
    url, sha256 = cfg.dataset_url, cfg.dataset_sha256
    return prepare_dataset(cfg.data_dir, url, sha256=sha256, progress=progress, layout=cfg.layout)


def ensure_manifest(cfg: RunConfig, *, progress: bool = True) -> pd.DataFrame:
    """The validation manifest, labelled as ``LABELS`` says."""
    image_root = find_image_root(cfg.data_dir, cfg.layout) or ensure_images(cfg, progress=progress)
    return validate_folder(image_root, manifest_path(cfg), progress=progress, layout=cfg.layout)


def ensure_split(cfg: RunConfig, *, progress: bool = True) -> pd.DataFrame:
    """The run's split, made when missing (from the manifest listed again, so the labels are
    those ``LABELS`` reads now)."""
    path = split_path(cfg)
    if path.is_file() and not cfg.overwrite:
        return read_split(path)
    manifest = ensure_manifest(cfg, progress=progress)
    split = split_dataset(
        manifest, seed=seed_for(cfg.seed, "split"), limit_per_class=cfg.limit_per_class
    )
    save_split(split, path, overwrite=cfg.overwrite)
    return split


def ensure_cache(cfg: RunConfig, split: pd.DataFrame, *, progress: bool = True) -> ImageCache:
    """The decoded uint8 cache of every image in the train, val and test splits."""
    image_root = find_image_root(cfg.data_dir, cfg.layout) or ensure_images(cfg, progress=progress)
    used = split[split["split"].isin(SPLITS)]
    cache_dir = cfg.data_dir / "cache"
    return build_cache(image_root, used, cache_dir, cfg.cache_size, progress=progress)


def make_datasets(
    cfg: RunConfig, split: pd.DataFrame, cache: ImageCache, train_pipeline: A.Compose | None = None
) -> dict[str, CachedImageDataset]:
    """Train, val and test datasets: ``train_pipeline`` (or ``AUGMENT``'s), the centre crop,
    and :func:`transforms.preprocessing_for` (what your own photos get)."""
    val = eval_transforms(cfg.eval_size, cfg.cache_size)
    train_pipeline = train_pipeline if train_pipeline is not None else make_train_pipeline(cfg)
    pipelines = {"train": train_pipeline, "val": val, "test": preprocessing_for(cfg).pipeline()}
    return split_datasets(cache, split, class_names(split), pipelines)


def make_loaders(cfg: RunConfig, datasets: dict, batch_size: int) -> dict:
    """Seeded loaders, evaluation at twice the batch; under ``torchrun`` train and val load
    this process's share of the global ``batch_size``. On a GPU the light pipeline's crop
    and flip run there (:class:`~catsdogs_helpers.datasets.DeviceCropFlip`)."""
    device = distributed.local_device(pick_device(cfg.device))
    crop_on = device if device.type == "cuda" else None  # a GPU crops faster than workers
    loaders = {}
    for name, dataset in datasets.items():
        train, shard = name == "train", name in ("train", "val")
        share = distributed.share_of_batch(batch_size) if shard else batch_size
        loaders[name] = make_loader(
            dataset,
            batch_size=share if train else share * 2,
            shuffle=train,
            num_workers=cfg.num_workers if train else 0,
            seed=seed_for(cfg.seed, "loader"),
            drop_last=train and len(dataset) > batch_size,
            shard=shard,
            crop_on=crop_on if train else None,
        )
    return loaders


def prepare_training(
    cfg: RunConfig, train_pipeline: A.Compose | None = None, *, progress: bool = True
) -> tuple[dict, RunConfig]:
    """The loaders, and the configuration for this data set (:func:`plan_time_budget`, then
    :meth:`RunConfig.for_data`)."""
    split = ensure_split(cfg, progress=progress)
    counts = split["split"].value_counts()
    n_train, n_val = int(counts.get("train", 0)), int(counts.get("val", 0))
    default = bool(cfg.time_budget) and cfg.augment in PIPELINES  # AUGMENT's: made at any side
    if default and train_pipeline is not None:
        default = describe_pipeline(train_pipeline) == describe_pipeline(make_train_pipeline(cfg))
    planned = plan_time_budget(cfg, n_train, n_val, shrink=default)
    if planned.image_size != cfg.image_size:
        train_pipeline = make_train_pipeline(planned)  # AUGMENT's, at the side chosen
    cache = ensure_cache(planned, split, progress=progress)
    datasets = make_datasets(planned, split, cache, train_pipeline)
    planned = planned.for_data(len(datasets["train"]))
    return make_loaders(planned, datasets, planned.batch_size), planned


def budget_sides(cfg: RunConfig) -> list[int]:
    """The sides ``TIME_BUDGET`` may train at from scratch: ``IMAGE_SIZE``, then down by 8 to
    2/3 of it (a pretrained start keeps its side)."""
    if cfg.pretrained:
        return [cfg.image_size]
    floor = max(32, int(round(cfg.image_size * 2 / 3 / 8)) * 8)
    return [cfg.image_size, *range(cfg.image_size - 8, floor - 1, -8)]


def epochs_within(
    cfg: RunConfig, images_per_s: float, n_train: int, n_val: int, side: int | None = None
) -> tuple[int, float]:
    """The most epochs, 1 to ``EPOCHS``, that fit in ``TIME_BUDGET`` minutes at ``images_per_s``
    (measured at ``IMAGE_SIZE``) when training at ``side``, and their expected seconds (over
    the budget when one epoch does not fit)."""
    side = side or cfg.image_size
    area = (side / cfg.image_size) ** 2
    for epochs in range(cfg.epochs, 0, -1):
        sizes = dataclasses.replace(cfg, epochs=epochs, image_size=side).sizes()
        train = training_seconds(cfg, sizes, n_train, images_per_s)
        seconds = train + epochs * n_val * FORWARD_COST * area / images_per_s
        if seconds <= cfg.time_budget * 60 or epochs == 1:
            return epochs, seconds
    raise ValueError(f"EPOCHS={cfg.epochs}: at least 1")


def side_and_epochs(
    cfg: RunConfig, images_per_s: float, n_train: int, n_val: int, shrink: bool = True
) -> tuple[int, int, float]:
    """``(side, epochs, seconds)``: the largest side of :func:`budget_sides` at which all
    ``EPOCHS`` fit the budget, else the smallest with the epochs that fit there. From scratch,
    more epochs at a smaller side beat fewer at the full one (docs/results.md)."""
    sides = budget_sides(cfg) if shrink else [cfg.image_size]
    for side in sides:
        epochs, seconds = epochs_within(cfg, images_per_s, n_train, n_val, side)
        if epochs == cfg.epochs:
            break
    return side, epochs, seconds


def _plan_key(cfg: RunConfig, n_train: int, shrink: bool) -> dict:
    return {"minutes": cfg.time_budget, "epochs": cfg.epochs, "model": cfg.model_name,
            "size": cfg.image_size, "batch": cfg.batch_size, "shrink": shrink,
            "train": n_train}  # fmt: skip


def saved_plan(cfg: RunConfig, n_train: int | None = None, shrink: bool = True) -> RunConfig | None:
    """``cfg`` as ``time_budget.json`` planned it, if that plan was made for ``cfg`` (as asked,
    or as already planned); ``n_train`` None (:func:`start`): for any photos and pipeline.
    ``OVERWRITE`` keeps it too, so that every notebook trains and evaluates the same run."""
    saved = runs.read_json(cfg.run_dir / "time_budget.json") if cfg.time_budget else None
    if saved is None:
        return None
    loose = ("train", "shrink") if n_train is None else ()
    if "image_size" not in saved:  # a plan of epochs alone, its batch fitted to the data
        saved["image_size"] = saved["key"]["size"]
        loose = (*loose, "shrink", "batch")
    made_for = {k: v for k, v in saved["key"].items() if k not in loose}
    asked = {k: v for k, v in _plan_key(cfg, n_train, shrink).items() if k not in loose}
    planned = {**made_for, "epochs": saved["epochs"], "size": saved["image_size"]}
    if asked not in (made_for, planned):
        return None
    return dataclasses.replace(cfg, epochs=saved["epochs"], image_size=saved["image_size"])


def plan_time_budget(cfg: RunConfig, n_train: int, n_val: int, shrink: bool = True) -> RunConfig:
    """``cfg`` with the epochs and image side (:func:`side_and_epochs`) that ``TIME_BUDGET``
    allows at the rate measured here; the choice is kept in ``time_budget.json`` and reused.
    ``shrink`` False keeps ``IMAGE_SIZE`` (a training pipeline of your own is made for it)."""
    if not cfg.time_budget:
        return cfg
    path = cfg.run_dir / "time_budget.json"
    before = saved_plan(cfg, n_train, shrink)
    if before is not None:
        log.info("TIME_BUDGET: %d epochs at %d px, as chosen before (%s: delete it to measure "
                 "again)", before.epochs, before.image_size, path)  # fmt: skip
        return before
    device = pick_device(cfg.device)
    setting = {"run": {"amp_dtype": amp_dtype(device), "channels_last": True}}
    rate = measure_training_speed(
        cfg.model_name, setting, image_size=cfg.image_size, batch_size=32, device=device
    )["run"]
    side, epochs, seconds = side_and_epochs(cfg, rate, n_train, n_val, shrink)
    plan = {"key": _plan_key(cfg, n_train, shrink), "epochs": epochs, "image_size": side}
    runs.write_json(path, {**plan, "images_per_s": rate, "seconds": seconds})
    log.info(plan_line(cfg, side, epochs, rate, seconds))
    return dataclasses.replace(cfg, epochs=epochs, image_size=side)


def plan_line(cfg: RunConfig, side: int, epochs: int, rate: float, seconds: float) -> str:
    end = time.strftime("%H:%M", time.localtime(time.time() + seconds))
    smaller = ""
    if side != cfg.image_size:
        smaller = f" at {side} px (all of them would not fit at IMAGE_SIZE {cfg.image_size})"
    over = ""
    if seconds > cfg.time_budget * 60:
        over = (": more than the budget, as one epoch needs that long (a smaller IMAGE_SIZE or "
                "LIMIT_PER_CLASS shortens it)")  # fmt: skip
    return (
        f"TIME_BUDGET {cfg.time_budget:g} min: {epochs} of {cfg.epochs} epochs fit{smaller}, at "
        f"the {rate:.0f} images/s measured here, about {seconds / 60:.1f} min (until about "
        f"{end}){over}"
    )


def train_run(
    cfg: RunConfig, train_pipeline: A.Compose | None = None, *, progress: bool = True
) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Everything notebook 04 does, in one call, down to :func:`training.fit` (which reuses a
    finished run or raises :class:`~catsdogs_helpers.runs.RunConflict`)."""
    with distributed.main_first():
        shared = cfg if distributed.is_main() else dataclasses.replace(cfg, overwrite=False)
        main = progress and distributed.is_main()
        loaders, cfg = prepare_training(shared, train_pipeline, progress=main)
        seed_everything(seed_for(cfg.seed, "model"))
        names = loaders["train"].dataset.class_names
        model = create_model(
            cfg.model_name, len(names), pretrained=cfg.pretrained, weights_path=cfg.weights_path
        )
        whiten_first_layer(model, loaders["train"].dataset.images())  # ResNet-9's
    device = distributed.local_device(pick_device(cfg.device))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loaders["train"]))
    history = fit(
        model,
        loaders["train"],
        loaders["val"],
        cfg,
        optimizer=optimizer,
        scheduler=scheduler,
        class_names=names,
        device=device,
        amp_dtype=amp_dtype(device),
        progress=progress and distributed.is_main(),
        preprocessing=preprocessing_for(cfg),
    )
    return model, history


def dataset_paths(cache: ImageCache, dataset) -> np.ndarray:
    """The path (relative to the image root) of each item of a cached dataset."""
    return cache.rows["path"].to_numpy()[dataset.indices]
