"""More than one GPU or machine: PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node=8 -m catsdogs_helpers.train ...`` starts one process per GPU and
tells each its place in the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`process_group` joins them (NCCL on CUDA, Gloo on the
CPU); from then on each process trains the same model on its own share of every batch, and
DDP averages the gradients, so all of them take the same optimiser step.

Everything here asks PyTorch whether a process group is running, and does nothing when none
is: a notebook, or any call outside ``torchrun``, stays one process and behaves exactly as
before. The rules the package follows in a group:

- ``BATCH_SIZE`` (and the recipe's batch) is the **global** batch, the images of one
  optimiser step; each process loads ``batch / processes`` of them (:func:`share_of_batch`).
  The plan, the learning rate (``Recipe.lr_for``) and the number of steps are therefore
  those of a single process with that batch, and a run's identity does not depend on how
  many processes trained it.
- Process 0 (:func:`is_main`) prepares the data first (:func:`main_first`), claims the run
  folder and writes everything in it; the others only read it.
- Validation is split between the processes without repeating any image and the sums are
  added up (:func:`reduce_result`), so every process sees the very accuracy that decides
  the best epoch, the one a single process would measure.
"""

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

#: The variables ``torchrun`` sets for each process it starts.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or anything that sets its variables) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """True inside a running process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 to ``world_size() - 1`` (0 outside a group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes train together (1 outside a group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True for the process that writes files and logs progress (process 0, or the only one)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for outside a group)."""
    if active():
        dist.barrier()


@contextlib.contextmanager
def process_group(timeout_minutes: float = 30) -> Iterator[None]:
    """Join the group ``torchrun`` started (NCCL on CUDA, else Gloo) for the block, and leave
    it afterwards. Without ``torchrun``'s variables, or inside a group already, it does
    nothing, so the same entry point runs as a single process."""
    if not launched_by_torchrun() or active():
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
    """Process 0's ``value``, on every process."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on process 0 first and on the others once it is done (work that
    writes a file the others then read: the split, the decoded cache, the run folder's
    claim). When the block fails on process 0, the others stop with an error that names
    its failure instead of waiting for it forever."""
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
    """Which items of ``dataset`` this process loads, or None outside a group.

    Training (``shuffle``): PyTorch's ``DistributedSampler``, one permutation per epoch
    shared by all processes (seeded by ``set_epoch``), each taking every n-th item; it
    repeats a few items so every process has as many batches (DDP needs that). Evaluation:
    every n-th item from this process's number on, none repeated, so the sums over all
    processes are those of the whole set."""
    if not active():
        return None
    if shuffle:
        return torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=0)
    return range(rank(), len(dataset), world_size())


def process_seed(seed: int) -> int:
    """The augmentation seed of this process for an epoch seeded ``seed``: ``seed`` itself
    for process 0 (and a single process), another for each other process, so no two
    processes draw the same crops and flips."""
    if rank() == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def reduce_result(result: R) -> R:
    """An epoch's result (``loss``, ``nll``, ``accuracy`` as means over ``images``, and
    ``seconds``) over all processes: image-weighted means, summed images, the longest time."""
    if not active():
        return result
    weighted = [result.loss * result.images, result.nll * result.images,
                result.accuracy * result.images, float(result.images)]  # fmt: skip
    sums = torch.tensor(weighted, dtype=torch.float64)
    seconds = torch.tensor([result.seconds], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        sums, seconds = sums.cuda(), seconds.cuda()
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    loss, nll, correct, images = sums.tolist()
    return dataclasses.replace(
        result, loss=loss / max(images, 1), nll=nll / max(images, 1),
        accuracy=correct / max(images, 1), images=int(images), seconds=seconds.item(),
    )  # fmt: skip


def share_buffers(model: nn.Module) -> None:
    """Copy process 0's buffers (batch-norm running statistics) to the others. DDP sends
    them before each training step, and each process then updates its own copy with its
    own images, so they differ slightly after the last step of an epoch."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def wrap(model: nn.Module, device: torch.device, some_frozen: bool = False) -> nn.Module:
    """``model`` inside DistributedDataParallel in a group (which also copies process 0's
    weights to the others); ``model`` itself otherwise. ``some_frozen``: parameters that do
    not train in some epochs (fine-tuning's head-only start) get no gradient there, which
    DistributedDataParallel must be told to expect."""
    if not active():
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=some_frozen)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[index], find_unused_parameters=some_frozen
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (whose weights checkpoints save)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
