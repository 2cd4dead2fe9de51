"""Models: torchvision architectures with an output layer sized to the classes.

Trained from scratch by default (no download). ``pretrained=True`` loads torchvision's
ImageNet weights, which needs the internet once and gives much higher accuracy quickly.
"""

from __future__ import annotations

import torchvision
from torch import nn

from .config import MODEL_NAMES

_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
}


def create_model(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Build ``name`` (one of :data:`config.MODEL_NAMES`) with ``num_classes`` outputs.

    From scratch, ResNets start with the last batch-norm of each residual block at zero, so
    each block begins as the identity: a known help when training without pretrained weights.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model {name!r} is unknown: use one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least two classes")
    builder = getattr(torchvision.models, name)
    if pretrained:
        weights = getattr(torchvision.models, _WEIGHTS[name]).DEFAULT
        model = builder(weights=weights)
    else:
        extra = {"zero_init_residual": True} if name.startswith("resnet") else {}
        model = builder(weights=None, **extra)
    if name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
