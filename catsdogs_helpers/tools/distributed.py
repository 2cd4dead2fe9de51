"""More than one GPU or machine: DistributedDataParallel, started by ``torchrun``. Outside a
process group everything here does nothing; in one, ``BATCH_SIZE`` is the global batch, and
process 0 prepares the data first and alone writes the run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

R = TypeVar("R")

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # its env


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 to ``world_size() - 1`` (0 outside a group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes train together (1 outside a group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True for the process that writes files and logs progress."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextlib.contextmanager
def process_group(timeout_minutes: float = 30) -> Iterator[None]:
    """Join ``torchrun``'s group (NCCL on CUDA, else Gloo) for the block, if there is one."""
    if active() or not all(name in os.environ for name in TORCHRUN_VARIABLES):
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The GPU of this process in a group (``cuda:LOCAL_RANK``); ``device`` otherwise."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _broadcast(value: Any) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on process 0 first, then on the others; they stop with its error if it
    fails there, instead of waiting forever."""
    if not active():
        yield
        return
    if not is_main():
        failure = _broadcast(None)
        if failure:
            raise RuntimeError(f"process 0 failed, so process {rank()} stops: {failure}")
        yield
        return
    try:
        yield
    except BaseException as err:
        _broadcast(f"{type(err).__name__}: {err}")
        raise
    _broadcast(None)


def share_of_batch(batch_size: int) -> int:
    """The images each process loads for one step of the global ``batch_size``."""
    processes = world_size()
    if batch_size % processes:
        raise ValueError(
            f"BATCH_SIZE={batch_size} does not split evenly over {processes} processes: it is "
            f"the global batch, so use a multiple of {processes} (e.g. "
            f"{max(1, round(batch_size / processes)) * processes})"
        )
    return batch_size // processes


def sampler_for(dataset, *, shuffle: bool):
    """This process's items, or None outside a group: for training one permutation per epoch
    (padded so all have as many batches), for evaluation every n-th item, none repeated."""
    if not active():
        return None
    if shuffle:
        return torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=0)
    return range(rank(), len(dataset), world_size())


def process_seed(seed: int) -> int:
    """``seed`` on process 0, another on each other one, so no two draw the same crops."""
    if rank() == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def reduce_result(result: R) -> R:
    """An epoch's result over all processes: image-weighted means, the longest ``seconds``."""
    if not active():
        return result
    means = (result.loss, result.nll, result.accuracy)
    sums = torch.tensor([*(m * result.images for m in means), result.images], dtype=torch.float64)
    seconds = torch.tensor([result.seconds], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        sums, seconds = sums.cuda(), seconds.cuda()
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    *totals, images = sums.tolist()
    loss, nll, accuracy = (total / max(images, 1) for total in totals)
    return dataclasses.replace(
        result, loss=loss, nll=nll, accuracy=accuracy, images=int(images), seconds=seconds.item()
    )


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every process (each the same shape), concatenated; alone: ``tensor``."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def share_buffers(model: nn.Module) -> None:
    """Copy process 0's buffers (batch-norm statistics, updated per process) to the others."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def wrap(model: nn.Module, device: torch.device, some_frozen: bool = False) -> nn.Module:
    """``model`` in DDP in a group; ``some_frozen``: some parameters get no gradient at times."""
    if not active():
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=some_frozen)
    index = device.index if device.index is not None else torch.cuda.current_device()
    ddp = nn.parallel.DistributedDataParallel
    return ddp(model, device_ids=[index], find_unused_parameters=some_frozen)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
