"""Explaining predictions: Grad-CAM maps (Selvaraju et al., 2017), the last spatial feature
map's channels weighed by the mean gradient of the class's logit, the positive part kept."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .devices import to_model_input

Target = Sequence[int] | torch.Tensor | None


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode inside the block, each module's own flag restored afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def find_target_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The outermost module producing the last spatial ``(N, C, H, W)`` map, found by hooks."""
    found: list[nn.Module] = []

    def record(module: nn.Module, _inputs: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1:
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
    """``layer``'s output, kept for ``torch.autograd.grad`` (backward hooks break on in-place
    ReLUs), and the logits."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # frozen weights: make the map itself a leaf to follow
            output = output.detach().requires_grad_()
        captured.append(output)
        return output.clone()  # so a following ReLU(inplace=True) leaves the map alone

    with layer.register_forward_hook(keep), torch.enable_grad():
        logits = model(x)
    if not captured:
        raise ValueError(f"the layer {type(layer).__name__} did not run in the forward pass")
    return captured[-1], logits.float()


def _targets(logits: torch.Tensor, target: Target) -> torch.Tensor:
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


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: Target = None, layer: nn.Module | None = None
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] of a normalised batch ``x`` for ``target`` (default:
    the predicted class); the model keeps its mode and gets no parameter gradients."""
    layer = layer if layer is not None else find_target_layer(model, x[:1])
    with _eval_mode(model):
        activations, logits = _forward_capturing(model, layer, x)
        score = logits.gather(1, _targets(logits, target)[:, None]).sum()
        # Images are independent in evaluation mode: the sum's gradient is each one's own.
        (gradients,) = torch.autograd.grad(score, activations)
    activations, gradients = activations.detach().float(), gradients.float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # one weight per channel and image
    cam = torch.relu((weights * activations).sum(dim=1))
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0].clamp_min(0)
    peak = cam.amax(dim=(1, 2), keepdim=True)  # all-zero maps (no evidence) stay zero
    cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    return cam.cpu().numpy().astype(np.float32)


def grad_cam_images(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    *,
    target: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] of uint8 images ``(N, H, W, 3)``, in batches."""
    images = images if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
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
