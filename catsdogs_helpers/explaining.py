"""Explaining predictions: Grad-CAM heat maps of where in a photo the model found its evidence.

Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391) asks how much each
channel of a late feature map pushes the score of one class up: the gradient of that class's
logit with respect to the feature map, averaged over the positions, gives one weight per
channel. The weighted sum of the channels, keeping only what speaks *for* the class (a ReLU),
is a coarse map of the evidence; upsampled to the photo, it shows whether the model looked at
the animal or at the sofa behind it.

The layer is found from the model itself (:func:`find_target_layer`), so the same code
explains our ResNet-9, the torchvision ResNets and EfficientNet, or a model of your own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .devices import to_model_input


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode inside the block; afterwards every module's own training flag again.

    Evaluation mode matters twice: batch-norm uses its running statistics, so each image's
    map depends on that image alone, and dropout is off, so the map is repeatable.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _is_spatial_map(output: object) -> bool:
    """A 4-D ``(N, C, H, W)`` tensor with more than one position."""
    return (
        isinstance(output, torch.Tensor)
        and output.dim() == 4
        and output.shape[-2] * output.shape[-1] > 1
    )


def find_target_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The module that produces the model's last spatial feature map, the layer Grad-CAM uses.

    Why that layer: it is the deepest one that still knows *where* (global pooling and the
    classifier after it average the positions away), and the deepest layers hold the
    class-level features (ears, snouts) rather than the edges and textures of early layers.
    Its grid is coarse (6 x 6 for ResNet-9 at 96 px, 4 x 4 for ResNet-50 at 128 px), which
    is why the maps are blurry.

    Found with forward hooks on every module during one forward pass of ``example_input``
    (a normalised batch; one image is enough): the last module to finish whose output is
    ``(N, C, H, W)`` with ``H * W > 1``. A container finishes after its children, so the
    outermost module returning that map is chosen (``layer4`` of a ResNet, ``features`` of
    EfficientNet). No table of layer names, so any architecture works.
    """
    found: list[nn.Module] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if _is_spatial_map(output):
            found.append(module)

    with contextlib.ExitStack() as hooks, _eval_mode(model), torch.no_grad():
        for module in model.modules():
            hooks.enter_context(module.register_forward_hook(record))
        model(example_input)
    if not found:
        raise ValueError(
            f"no layer of {type(model).__name__} outputs a spatial feature map for an input "
            f"of shape {tuple(example_input.shape)}: use larger images or pass layer="
        )
    return found[-1]


def _forward_capturing(
    model: nn.Module, layer: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits for ``x`` and ``layer``'s output, kept in the graph so it can be
    differentiated (``torch.autograd.grad``; backward hooks break on in-place ReLUs)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # frozen weights: make the map itself a leaf to follow
            output = output.detach().requires_grad_()
        captured.append(output)
        # The rest of the network gets a copy, so a following ReLU(inplace=True) changes the
        # copy and not the map we differentiate against.
        return output.clone()

    with layer.register_forward_hook(keep), torch.enable_grad():
        logits = model(x)
    if not captured:
        raise ValueError(f"the layer {type(layer).__name__} did not run in the forward pass")
    return captured[-1], logits.float()


def _targets(logits: torch.Tensor, target: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """One class index per image: ``target`` checked, or the predicted class."""
    if target is None:
        return logits.argmax(1)
    target = torch.as_tensor(np.asarray(target), device=logits.device).long().reshape(-1)
    n, classes = logits.shape
    if len(target) != n or target.min() < 0 or target.max() >= classes:
        raise ValueError(
            f"target must hold one class index in 0..{classes - 1} per image ({n}), "
            f"got {target.tolist()}"
        )
    return target


def _normalised_maps(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` maps upsampled to ``size`` and divided by each map's peak (all zeros,
    where no position speaks for the class, stay zeros)."""
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    cam = cam.clamp_min(0)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    return cam.cpu().numpy().astype(np.float32)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Sequence[int] | torch.Tensor | None = None,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] for a normalised batch ``x`` ``(N, 3, H, W)``.

    ``x`` is what :func:`devices.to_model_input` makes (channels_last or not), on the model's
    device. ``target`` is the class to explain per image (default: the predicted one);
    ``layer`` defaults to :func:`find_target_layer`. The model runs in evaluation mode and is
    left in the mode it was in; the hooks are removed even on error, and no gradient is left
    on the parameters (only the feature map is differentiated). Computed in float32.
    """
    layer = layer if layer is not None else find_target_layer(model, x[:1])
    with _eval_mode(model):
        activations, logits = _forward_capturing(model, layer, x)
        score = logits.gather(1, _targets(logits, target)[:, None]).sum()
        # Images are independent in evaluation mode, so the gradient of the sum gives each
        # image the gradient of its own score.
        (gradients,) = torch.autograd.grad(score, activations)
    activations, gradients = activations.detach().float(), gradients.float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # one weight per channel and image
    cam = torch.relu((weights * activations).sum(dim=1))
    return _normalised_maps(cam, (x.shape[-2], x.shape[-1]))


def grad_cam_images(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    *,
    target: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] for uint8 images ``(N, H, W, 3)``, as the loaders
    yield them; the model is on ``device``. Batches of ``batch_size`` bound the memory."""
    images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        return np.zeros((0, *images.shape[1:3]), dtype=np.float32)
    if layer is None:
        layer = find_target_layer(model, to_model_input(images[:1], device))
    maps = []
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        chunk_target = None if target is None else np.asarray(target)[chunk]
        maps.append(grad_cam(model, to_model_input(images[chunk], device), chunk_target, layer))
    return np.concatenate(maps)
