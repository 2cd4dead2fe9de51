"""Devices and number formats: CUDA, MPS or CPU, mixed precision (bf16/fp16), channels_last."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from .transforms import IMAGENET_MEAN, IMAGENET_STD


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a name asks for that device."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE='cuda' but no CUDA GPU is visible: use DEVICE='auto'")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("DEVICE='mps' but Apple MPS is not available: use DEVICE='auto'")
    return torch.device(preference)


#: The ``ONEDNN_MAX_CPU_ISA`` values that still allow oneDNN's bfloat16 kernels.
BF16_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10")


def cpu_supports_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, unless ``ONEDNN_MAX_CPU_ISA`` holds oneDNN below."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and not isa.startswith(BF16_ISAS):
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 or fp16 on CUDA, bf16 on able CPUs, else None."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype``, or a no-op context when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_model_input(
    images: torch.Tensor,
    device: torch.device,
    *,
    channels_last: bool = True,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` batch -> normalised float ``(N, 3, H, W)`` on ``device``; ``size``
    resizes it."""
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    x = (images.to(device, non_blocking=True).permute(0, 3, 1, 2).float() - mean) / std
    if size is not None and size != x.shape[-1]:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
