"""Models: a small ResNet-9 for fast training from scratch, and torchvision architectures.

Every model gets an output layer sized to the classes. Trained from scratch by default (no
download). ``pretrained=True`` loads torchvision's ImageNet weights (torchvision models only),
which needs the internet once and gives much higher accuracy quickly.
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


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The ResNet-9 of the DAWNBench speed runs, sized for 64-128 px photos.

    A strided first convolution, three stages (convolution, max-pool, a residual block after
    the first and last), global max-pooling, and a scaled linear output. With widths
    32-64-128-256 it has 1.6 M parameters and trains about twice as fast as a
    ResNet-18 per image on a CPU, which buys the epochs that accuracy needs.
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, stride=2),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w),
            nn.MaxPool2d(2),
            _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = 0.125  # keeps the initial logits small

    def forward(self, x):
        return self.fc(self.features(x)) * self.scale


def create_model(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Build ``name`` (one of :data:`config.MODEL_NAMES`) with ``num_classes`` outputs.

    From scratch, torchvision ResNets start with the last batch-norm of each residual block
    at zero, so each block begins as the identity: a known help without pretrained weights.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model {name!r} is unknown: use one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least two classes")
    if name == "resnet9":
        if pretrained:
            raise ValueError("resnet9 has no pretrained weights: use PRETRAINED=False, or a "
                             "torchvision model such as resnet18")  # fmt: skip
        return ResNet9(num_classes)
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
