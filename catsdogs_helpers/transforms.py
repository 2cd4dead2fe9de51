"""Albumentations pipelines for training and evaluation, uint8 HWC arrays in and out; the
conversion to a normalised float tensor is done per batch on the device
(:func:`catsdogs_helpers.devices.to_model_input`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from .config import TTAS, RunConfig, runs_dir, seed_for
from .images import PathOrBytes, load_square
from .plumbing import atomic_path

#: ImageNet channel statistics, the usual choice for torchvision models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def light_pipeline(image_size: int = 96, resize: int = 110, seed: int | None = 42) -> A.Compose:
    """Ours: a random crop and a horizontal flip. Cheap, and on a few thousand photos
    trained for a few epochs it is what pays."""
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=resize),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
        ],
        seed=seed,
    )


def tutorial_pipeline(image_size: int = 128, resize: int = 160, seed: int | None = 42) -> A.Compose:
    """The tutorial's pipeline with its bug fixed: a real affine (shift 5 %, scale 5 %,
    rotate 15 degrees), a random crop, colour jitter and brightness/contrast."""
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=resize),
            A.Affine(translate_percent=(-0.05, 0.05), scale=(0.95, 1.05), rotate=(-15, 15), p=0.5),
            A.RandomCrop(height=image_size, width=image_size),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1, p=0.5),
            A.RandomBrightnessContrast(p=0.5),
        ],
        seed=seed,
    )


def heavy_pipeline(image_size: int = 96, resize: int = 110, seed: int | None = 42) -> A.Compose:
    """Deliberately too much (large rotations and zoom, strong colours, blur): an example of
    over-augmentation to compare against."""
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=resize),
            A.Affine(translate_percent=(-0.2, 0.2), scale=(0.6, 1.4), rotate=(-60, 60), p=1.0),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.6, contrast=0.6, saturation=0.8, hue=0.4, p=1.0),
            A.GaussianBlur(blur_limit=(3, 9), p=0.5),
            A.ToGray(p=0.3),
        ],
        seed=seed,
    )


def no_augmentation(image_size: int = 96, resize: int = 110, seed: int | None = 42) -> A.Compose:
    """A centre crop only: to see what augmentation buys."""
    return A.Compose(
        [A.SmallestMaxSize(max_size=resize), A.CenterCrop(height=image_size, width=image_size)],
        seed=seed,
    )


#: The named training pipelines (the ``AUGMENT`` parameter).
PIPELINES: dict[str, Callable[..., A.Compose]] = {
    "light": light_pipeline,
    "tutorial": tutorial_pipeline,
    "heavy": heavy_pipeline,
    "none": no_augmentation,
}


def pipeline_file(name: str | Path) -> Path:
    """Where a pipeline file ``AUGMENT`` names lives: a relative path is in ``runs/``."""
    return runs_dir() / Path(name).expanduser()


def train_pipeline(cfg: RunConfig) -> A.Compose:
    """``AUGMENT``'s pipeline at the run's sizes, or the one in the file it names (relative:
    in ``runs/``), seeded from ``SEED``."""
    seed = seed_for(cfg.seed, "augment")
    if cfg.augment in PIPELINES:
        return PIPELINES[cfg.augment](cfg.image_size, cfg.cache_size, seed=seed)
    path = pipeline_file(cfg.augment)
    if not path.is_file():
        raise FileNotFoundError(f"AUGMENT={cfg.augment!r}: there is no pipeline file {path}")
    pipeline = A.load(path, data_format="yaml" if path.suffix != ".json" else "json")
    if not isinstance(pipeline, A.Compose):
        pipeline = A.Compose([pipeline])
    pipeline.set_random_seed(seed)
    return pipeline


def describe_pipeline(pipeline: A.Compose) -> dict[str, Any]:
    """``A.to_dict`` of the pipeline without the version: what a run records and compares."""
    return A.to_dict(pipeline)["transform"]


def save_pipeline(pipeline: A.Compose, path: str | Path) -> Path:
    """Write ``pipeline`` with ``A.save`` (JSON), atomically; a relative path is in ``runs/``."""
    path = pipeline_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        A.save(pipeline, str(tmp))
    return path


def eval_transforms(eval_size: int = 96, cache_size: int = 110) -> A.Compose:
    """The deterministic evaluation pipeline: shorter side to ``cache_size``, centre crop."""
    return A.Compose(
        [A.SmallestMaxSize(max_size=cache_size), A.CenterCrop(eval_size, eval_size)], seed=0
    )


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input at evaluation, saved with the model: (1) a
    ``cache_size`` square (:func:`images.load_square`), (2) a centre crop of ``eval_size``
    (the whole square for ``flip_crops``), (3) per batch ``mean``/``std``, (4) ``tta``."""

    cache_size: int
    eval_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.tta not in TTAS:
            raise ValueError(f"tta={self.tta!r} is unknown: use one of {', '.join(TTAS)}")
        if not 0 < self.eval_size <= self.cache_size:
            raise ValueError(f"eval_size {self.eval_size} must be 1..cache_size {self.cache_size}")

    @property
    def input_size(self) -> int:
        """The side of the uint8 images the pipeline yields (and an exported model takes)."""
        return self.cache_size if self.tta == "flip_crops" else self.eval_size

    def pipeline(self) -> A.Compose:
        """The uint8 part (step 2) as an Albumentations pipeline, for datasets."""
        return eval_transforms(self.input_size, self.cache_size)

    def read(self, source: PathOrBytes) -> np.ndarray:
        """Steps 1-2 for one photo (a path or its bytes): the uint8 array a test batch holds."""
        return self.pipeline()(image=load_square(source, self.cache_size))["image"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})

    def with_tta(self, tta: str) -> Preprocessing:
        """The same preprocessing with another test-time augmentation."""
        return replace(self, tta=tta)


def preprocessing_for(cfg: RunConfig) -> Preprocessing:
    """The run's evaluation preprocessing: its sizes, ImageNet statistics and ``TTA``."""
    return Preprocessing(cache_size=cfg.cache_size, eval_size=cfg.eval_size, tta=cfg.tta)


def one_at_a_time(pipeline: A.Compose) -> list[tuple[str, A.Compose]]:
    """Each transform of a training pipeline after its first (the resize), alone and always
    applied (p=1)."""
    resize, *rest = pipeline.transforms
    out = [(type(resize).__name__, A.Compose([resize], seed=0))]
    for transform in rest:
        always = transform.__class__(**{**transform.get_transform_init_args(), "p": 1.0})
        out.append((type(transform).__name__, A.Compose([resize, always], seed=0)))
    return out
