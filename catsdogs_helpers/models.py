"""Models: a small ResNet-9 to train from scratch fast, and torchvision architectures."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from .config import MODEL_NAMES

PathArg = str | os.PathLike[str]


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The ResNet-9 of the DAWNBench speed runs, sized for 64-128 px photos: 1.6 M parameters,
    about twice as fast per image as a ResNet-18 on a CPU, which buys the epochs it needs."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        stem = [_conv_bn(3, w, stride=2), _conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w)]
        body = [_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2), _conv_bn(4 * w, 8 * w), nn.MaxPool2d(2)]
        head = [_Residual(8 * w), nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*stem, *body, *head)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = 0.125  # keeps the initial logits small

    def forward(self, x):
        return self.fc(self.features(x)) * self.scale


class WeightsError(RuntimeError):
    """Pretrained weights are neither here nor downloadable, or do not fit the architecture."""


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights for ``name``: URL, ``transforms()`` and more."""
    return torchvision.models.get_model_weights(name).DEFAULT


def hub_weights_file(name: str) -> Path:
    """Where torchvision keeps ``name``'s ImageNet weights: ``torch.hub.get_dir()/checkpoints``."""
    filename = Path(urlparse(imagenet_weights(name).url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _hub_state_dict(name: str) -> dict:
    weights = imagenet_weights(name)
    try:  # the cached file, or a download into the cache
        return weights.get_state_dict(
            progress=True, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as err:
        raise WeightsError(
            f"PRETRAINED=True: the ImageNet weights of {name} are not on this machine and could "
            f"not be downloaded or read ({type(err).__name__}: {err}). Without a network, "
            f"download {weights.url} elsewhere, then put it in {hub_weights_file(name).parent} "
            "(torch.hub.get_dir()/checkpoints, where torchvision looks) or set WEIGHTS_PATH to "
            "the file."
        ) from err


def _file_state_dict(path: Path) -> dict:
    where = f"WEIGHTS_PATH={str(path)!r}"
    if not path.is_file():
        raise WeightsError(f"{where} is not a file: give the absolute path of a .pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{where} is not a readable state dict: {err}") from err
    if not isinstance(state, dict):
        raise WeightsError(f"{where} holds a {type(state).__name__}, not a state dict")
    return state


def load_imagenet_weights(model: nn.Module, name: str, weights_path: PathArg = "") -> None:
    """Load ``name``'s ImageNet weights into ``model`` (1000 outputs); or a WeightsError."""
    path = Path(weights_path).expanduser() if weights_path else hub_weights_file(name)
    state = _file_state_dict(path) if weights_path else _hub_state_dict(name)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        summary = " ".join(str(err).splitlines()[0:3])[:400]
        raise WeightsError(
            f"{path} does not fit {name}: {summary}. It must hold torchvision's "
            f"ImageNet state dict for {name} ({imagenet_weights(name).url})."
        ) from err


def head_of(model: nn.Module) -> nn.Module:
    """The output layer :func:`create_model` makes: new in a pretrained model, so trained first."""
    fc = getattr(model, "fc", None)
    return fc if isinstance(fc, nn.Linear) else model.classifier[-1]


def create_model(
    name: str, num_classes: int, *, pretrained: bool = False, weights_path: PathArg = ""
) -> nn.Module:
    """``name`` (one of :data:`config.MODEL_NAMES`) with ``num_classes`` outputs. From
    scratch, ResNet blocks start as the identity (a zero last batch-norm), a known help."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model {name!r} is unknown: use one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least two classes")
    if name == "resnet9" and pretrained:
        advice = 'use PRETRAINED=False, or a torchvision model such as MODEL_NAME="resnet18"'
        raise ValueError(f"resnet9 has no pretrained weights: {advice}")
    if name == "resnet9":
        return ResNet9(num_classes)
    if weights_path and not pretrained:
        raise ValueError(f"weights_path={str(weights_path)!r} is given without pretrained=True")
    scratch = {"zero_init_residual": True} if name.startswith("resnet") and not pretrained else {}
    model = getattr(torchvision.models, name)(weights=None, **scratch)
    if pretrained:
        load_imagenet_weights(model, name, weights_path)
    if name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
