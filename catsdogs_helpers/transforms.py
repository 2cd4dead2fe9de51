"""Albumentations pipelines: what the model sees in training and in evaluation.

The pipelines work on uint8 HWC arrays and return uint8 arrays. Normalisation and the
conversion to a float tensor happen once per batch on the training device
(:func:`catsdogs_helpers.training.to_model_input`), which is cheaper than per image and sends
four times fewer bytes to a GPU.
"""

from __future__ import annotations

import albumentations as A

#: ImageNet channel statistics, the usual choice for torchvision models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTS = ("light", "tutorial", "none")


def train_transforms(
    image_size: int = 112, cache_size: int = 128, augment: str = "light", seed: int | None = 42
) -> A.Compose:
    """The training pipeline for images (or cache entries) with shorter side ``cache_size``.

    - ``light``: a random ``image_size`` crop and a horizontal flip. Cheap, and on a few
      thousand photos trained for a few epochs it is what pays.
    - ``tutorial``: the tutorial's pipeline with its bug fixed: a real affine (shift 5 %,
      scale 5 %, rotate 15 degrees, p=0.5), a random crop, colour jitter and
      brightness/contrast.
    - ``none``: a centre crop only (to see what augmentation buys).
    """
    resize = [A.SmallestMaxSize(max_size=cache_size)]
    if augment == "light":
        steps = [A.RandomCrop(image_size, image_size), A.HorizontalFlip(p=0.5)]
    elif augment == "tutorial":
        steps = [
            A.Affine(translate_percent=(-0.05, 0.05), scale=(0.95, 1.05), rotate=(-15, 15), p=0.5),
            A.RandomCrop(image_size, image_size),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1, p=0.5),
            A.RandomBrightnessContrast(p=0.5),
        ]
    elif augment == "none":
        steps = [A.CenterCrop(image_size, image_size)]
    else:
        raise ValueError(f"augment={augment!r} is unknown: use one of {', '.join(AUGMENTS)}")
    return A.Compose(resize + steps, seed=seed)


def eval_transforms(eval_size: int = 128, cache_size: int = 128) -> A.Compose:
    """The deterministic evaluation pipeline: shorter side to ``cache_size``, centre crop."""
    return A.Compose(
        [A.SmallestMaxSize(max_size=cache_size), A.CenterCrop(eval_size, eval_size)], seed=0
    )
