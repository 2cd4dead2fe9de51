"""Training: one epoch, one evaluation, and ``fit``, which repeats them with checkpoints.

Notebook 04 shows :func:`train_one_epoch` and :func:`evaluate` as they are here, runs one
epoch by hand, then calls :func:`fit`, which calls the same two functions every epoch and
adds what a real run needs:

- ``last.pt`` after every epoch (everything needed to resume: model, optimiser, scheduler,
  gradient scaler, random states, history) and ``best.pt`` when validation accuracy
  improves, both written to a temporary name and renamed, so a killed run never leaves a
  half-written checkpoint behind; ``history.csv`` and ``summary.json`` (see :mod:`runs`);
- resuming (``resume=True``), reuse of a finished run with the same settings, and
  :class:`~catsdogs_helpers.runs.RunConflict` for one with other settings;
- progressive resizing (each epoch's image size comes from the plan) and early stopping;
- fine-tuning of pretrained weights (``plan.fine_tuning``): the new output layer alone
  first, then all layers, the pretrained ones at a lower rate (:func:`set_trainable`,
  :func:`parameter_groups`). Which layers train follows from the epoch number alone, so a
  resumed run continues in the right phase.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed, runs
from .config import TrainingPlan, seed_for
from .devices import autocast, to_model_input
from .files import atomic_path
from .models import create_model, head_of
from .progress import progress_bar
from .transforms import Preprocessing

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or does not fit."""


@dataclass(frozen=True)
class EpochResult:
    """What one pass over a loader measured. ``loss`` is what the optimiser minimised (with
    label smoothing, if any); ``nll`` is the plain cross-entropy, comparable between
    training and validation."""

    loss: float
    nll: float
    accuracy: float
    images: int
    seconds: float


def train_one_epoch(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    image_size: int | None = None,
    progress: bool = True,
) -> EpochResult:
    """One pass over ``loader``, one optimiser step per batch."""
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    model.train()
    totals = torch.zeros(3, device=device)  # summed loss, summed plain NLL, right answers
    seen, start = 0, time.perf_counter()
    for images, labels in progress_bar(loader, desc="training", disable=not progress):
        x = to_model_input(images, device, size=image_size)  # uint8 -> normalised, resized
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):  # forward pass in bf16/fp16 where it is safe
            logits = model(x).float()
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # gradients (scaled only for float16)
        scaler.step(optimizer)  # move the weights against the gradient
        scaler.update()
        if scheduler is not None:
            scheduler.step()  # the learning rate for the next batch
        with torch.no_grad():
            nll = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            totals += torch.stack([loss * len(y), nll, (logits.argmax(1) == y).sum()])
        seen += len(y)
    mean_loss, mean_nll, accuracy = (totals / max(seen, 1)).tolist()
    return EpochResult(mean_loss, mean_nll, accuracy, seen, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
) -> EpochResult:
    """Plain cross-entropy and accuracy over every image of ``loader``, without learning."""
    model.eval()
    totals = torch.zeros(2, device=device)  # summed NLL, right answers
    seen, start = 0, time.perf_counter()
    for images, labels, *_ in loader:
        x = to_model_input(images, device)
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        nll = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        totals += torch.stack([nll, (logits.argmax(1) == y).sum()])
        seen += len(y)
    nll, accuracy = (totals / max(seen, 1)).tolist()
    return EpochResult(nll, nll, accuracy, seen, time.perf_counter() - start)


# ------------------------------------------------------------------ what fit is made of


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _decay_groups(params: list, lr: float, weight_decay: float) -> list[dict]:
    """Weight decay for weights, none for biases and norms (decaying them only hurts)."""
    return [
        {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
    ]


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float | None = None
) -> list[dict]:
    """The optimiser's parameter groups. From scratch: the trainable parameters, with and
    without weight decay. Fine-tuning (``backbone_lr_scale`` given): the new output layer at
    ``lr``, every other parameter at ``lr * backbone_lr_scale``, frozen now or not (which ones
    train changes by epoch, :func:`set_trainable`; a frozen one gets no gradient, and the
    optimiser skips it)."""
    if backbone_lr_scale is None:
        params = [p for p in model.parameters() if p.requires_grad]
        return _decay_groups(params, lr, weight_decay)
    head = {id(p) for p in head_of(model).parameters()}
    head_params = [p for p in model.parameters() if id(p) in head]
    backbone = [p for p in model.parameters() if id(p) not in head]
    return _decay_groups(head_params, lr, weight_decay) + _decay_groups(
        backbone, lr * backbone_lr_scale, weight_decay
    )


def trains_backbone(plan: TrainingPlan, epoch: int) -> bool:
    """Whether epoch ``epoch`` (counted from 0) trains all layers: always from scratch; with
    pretrained weights, not in the first ``plan.fine_tuning.head_epochs``."""
    return plan.fine_tuning is None or epoch >= plan.fine_tuning.head_epochs


def set_trainable(model: nn.Module, plan: TrainingPlan, epoch: int) -> None:
    """Freeze the pretrained layers in a head-only epoch, unfreeze them after (no change from
    scratch). Frozen layers get no gradient: the optimiser leaves them as they are and the
    backward pass stops at the head, so a head epoch costs little more than a forward pass.
    Their batch-norm statistics still adapt to the new photos (the model is in train mode)."""
    if plan.fine_tuning is None:
        return
    everything = trains_backbone(plan, epoch)
    head = {id(p) for p in head_of(model).parameters()}
    for param in model.parameters():
        param.requires_grad_(everything or id(param) in head)


def make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    *,
    backbone_lr_scale: float | None = None,
) -> torch.optim.Optimizer:
    """``sgd`` (Nesterov momentum 0.9) or ``adam``, over :func:`parameter_groups` (no decay on
    biases and norms; with ``backbone_lr_scale``, a lower rate for pretrained layers)."""
    groups = parameter_groups(model, lr, weight_decay, backbone_lr_scale)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ValueError(f"optimizer {name!r} is unknown: use 'sgd' or 'adam'")


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, *, epochs: int, steps_per_epoch: int
):
    """``onecycle`` (warm up for a quarter of training, then cosine down, stepped per batch)
    or ``plateau`` (halve the rate after 3 epochs without a better validation accuracy)."""
    if schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=max(10, epochs * steps_per_epoch),  # tiny runs need a few steps
            pct_start=0.25,
            div_factor=20.0,
            final_div_factor=200.0,
        )
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=3
        )
    raise ValueError(f"schedule {schedule!r} is unknown: use 'onecycle' or 'plateau'")


@dataclass
class TrainingParts:
    """What a plan trains with: optimiser, learning-rate schedule, gradient scaler, loss."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    per_batch: bool  # the scheduler steps after every batch (else after each evaluation)


def make_training_parts(
    model: nn.Module, plan: TrainingPlan, steps_per_epoch: int, device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> TrainingParts:  # fmt: skip
    """The optimiser, schedule, scaler (float16 only) and loss of ``plan`` for ``model``."""
    scale = plan.fine_tuning.backbone_lr_scale if plan.fine_tuning else None
    optimizer = make_optimizer(
        model, plan.optimizer, plan.lr, plan.weight_decay, backbone_lr_scale=scale
    )
    return TrainingParts(
        optimizer=optimizer,
        scheduler=make_scheduler(
            optimizer, plan.schedule, epochs=plan.epochs, steps_per_epoch=max(1, steps_per_epoch)
        ),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=plan.label_smoothing),
        per_batch=plan.schedule == "onecycle",
    )


def reseed_epoch(loader, seed: int) -> None:
    """Seed one epoch's shuffling and augmentations from ``seed`` alone (see
    :func:`catsdogs_helpers.config.seed_for`). Worker processes take their seeds from the
    loader's generator. With several processes (a ``DistributedSampler``), all of them
    shuffle by ``seed`` and each augments by its own :func:`distributed.process_seed`."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(seed)
        seed = distributed.process_seed(seed)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    transform = getattr(getattr(loader, "dataset", None), "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


# ---------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``), with a clear error when it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (notebook 04)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}). It may be "
            "truncated; delete it and train again (or resume from last.pt)."
        ) from err


def load_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the model saved in a checkpoint; returns ``(model in eval mode, checkpoint)``."""
    checkpoint = load_checkpoint(path)
    try:
        model = create_model(checkpoint["model_name"], len(checkpoint["class_names"]))
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path} holds no model this package can rebuild: {err}") from err
    model.to(device).eval()
    return model, checkpoint


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


# ------------------------------------------------------------------------------------ fit


@dataclass
class FitState:
    """Where a run stands: epochs done, the best validation accuracy, and the history."""

    epoch: int = 0
    best_acc: float = -1.0
    since_best: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def step_name(train_epoch: Callable) -> str:
    """``module.name`` of an epoch function: part of a run's identity, so a run trained with
    your own step is never mistaken for one trained with the package's."""
    return f"{train_epoch.__module__}.{train_epoch.__qualname__}"


def _checkpoint(model, parts: TrainingParts, state: FitState, meta: dict, finished: bool):
    return {
        "model": model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": _rng_state(),
        "finished": finished,
        **meta,
        **vars(state),
    }


def _restore(model, parts: TrainingParts, previous: dict) -> FitState:
    model.load_state_dict(previous["model"])
    parts.optimizer.load_state_dict(previous["optimizer"])
    parts.scheduler.load_state_dict(previous["scheduler"])
    parts.scaler.load_state_dict(previous["scaler"])
    _set_rng_state(previous["rng"])
    return FitState(**{k: previous[k] for k in vars(FitState())})


def _start(
    run_dir: Path, model, parts, settings: dict, *, resume: bool, overwrite: bool
) -> tuple[FitState, bool]:
    """``(state, finished)``: the state of a finished run with the same settings (reused,
    even with ``overwrite``: it would only repeat itself), the restored state of an
    interrupted run (``resume``), or a fresh state."""
    last = run_dir / "last.pt"
    previous = load_checkpoint(last) if last.is_file() else None
    before = previous.get("settings", {}) if previous else {}
    if previous and previous["finished"] and not runs.differences(before, settings):
        log.info("%s already holds a finished run: loading it, not training again", run_dir)
        return FitState(**{k: previous[k] for k in vars(FitState())}), True
    if overwrite:
        for stale in ("last.pt", "best.pt", "history.csv", "summary.json", "metrics.json"):
            (run_dir / stale).unlink(missing_ok=True)
    if overwrite or previous is None:
        return FitState(), False
    runs.check_same_settings(run_dir, before, settings, "a training run")
    if not resume:
        raise runs.RunConflict(
            f"{run_dir} holds an unfinished run (epoch {previous['epoch']} of "
            f"{settings['plan']['epochs']}). Set RESUME=True to continue it, OVERWRITE=True "
            "to start again, or use a new RUN_NAME."
        )
    log.info("resuming %s after epoch %d", run_dir.name, previous["epoch"])
    return _restore(model, parts, previous), False


@contextmanager
def _begin(
    run_dir: Path, model, parts, settings: dict, *, resume: bool, overwrite: bool
) -> Iterator[tuple[FitState, bool]]:
    """:func:`_start` while the run folder is claimed. With several processes, process 0
    claims the folder and starts (replacing files with ``overwrite``) first; the others then
    read the same checkpoint, and never change the folder."""
    with ExitStack() as stack:
        with distributed.main_first():
            if distributed.is_main():
                stack.enter_context(runs.claim(run_dir))
            started = _start(run_dir, model, parts, settings, resume=resume,
                             overwrite=overwrite and distributed.is_main())  # fmt: skip
        yield started


def _validate(model, val_loader, device: torch.device, amp_dtype) -> EpochResult:
    """:func:`evaluate`, over all processes: each evaluates its share of the validation set
    with process 0's batch-norm statistics (the ones its checkpoint saves), and the sums are
    added up, so every process gets the same accuracy, the whole set's."""
    distributed.share_buffers(model)
    return distributed.reduce_result(evaluate(model, val_loader, device, amp_dtype=amp_dtype))


def _epoch_row(epoch: int, train: EpochResult, val: EpochResult, lr: float, size: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_nll": train.nll,
        "train_acc": train.accuracy,
        "val_loss": val.nll,
        "val_acc": val.accuracy,
        "lr": lr,
        "seconds": train.seconds + val.seconds,
        "train_images_per_s": train.images / max(train.seconds, 1e-9),
        "image_size": size,
    }


def _record(run_dir: Path, model, parts, state: FitState, meta: dict, plan: TrainingPlan) -> bool:
    """Update the state after an epoch, write checkpoints, history and summary; True when
    training is done (the last epoch, or no better validation accuracy for
    ``plan.early_stopping`` epochs). Every process updates its state; only process 0 writes,
    the others wait for it."""
    row = state.history[-1]
    improved = row["val_acc"] > state.best_acc
    state.best_acc = max(state.best_acc, row["val_acc"])
    state.since_best = 0 if improved else state.since_best + 1
    stop = plan.early_stopping > 0 and state.since_best >= plan.early_stopping
    done = stop or state.epoch >= plan.epochs
    if distributed.is_main():
        _write_epoch(run_dir, model, parts, state, meta, plan, improved=improved, done=done)
    distributed.barrier()
    if stop:
        log.info("no better validation accuracy for %d epochs: stopping", plan.early_stopping)
    return done


def _write_epoch(run_dir: Path, model, parts, state: FitState, meta: dict, plan: TrainingPlan,
                 *, improved: bool, done: bool) -> None:  # fmt: skip
    """Checkpoints (``best.pt`` when ``improved``), history and summary after an epoch."""
    row = state.history[-1]
    if improved:
        _atomic_save(_checkpoint(model, parts, state, meta, False), run_dir / "best.pt")
    _atomic_save(_checkpoint(model, parts, state, meta, done), run_dir / "last.pt")
    runs.write_history(run_dir, state.history)
    runs.write_summary(run_dir, meta["settings"], vars(state), finished=done)
    log.info(
        "epoch %d/%d: train loss %.3f (plain %.3f) acc %.3f | val loss %.3f acc %.4f%s | %.0fs",
        state.epoch, plan.epochs, row["train_loss"], row["train_nll"],
        row["train_acc"], row["val_loss"], row["val_acc"],
        " (best so far, saved)" if improved else "", row["seconds"],
    )  # fmt: skip


def _run_epoch(
    trained: nn.Module, loaders: tuple, parts: TrainingParts, plan: TrainingPlan,
    state: FitState, *, device: torch.device, amp_dtype: torch.dtype | None, progress: bool,
    train_epoch: Callable[..., EpochResult],
) -> None:  # fmt: skip
    """One epoch of :func:`fit`: train at the plan's size for it (while fine-tuning starts,
    the new head alone), validate, step a per-epoch scheduler, and add the row to ``state``."""
    (train_loader, val_loader), model = loaders, distributed.unwrap(trained)
    size = plan.sizes[state.epoch]
    set_trainable(model, plan, state.epoch)  # fine-tuning: the head alone first
    train = distributed.reduce_result(train_epoch(
        trained, train_loader, parts.optimizer, parts.loss_fn, device,
        scheduler=parts.scheduler if parts.per_batch else None, scaler=parts.scaler,
        amp_dtype=amp_dtype, image_size=size, progress=progress and distributed.is_main(),
    ))  # fmt: skip
    val = _validate(model, val_loader, device, amp_dtype)
    if not parts.per_batch:
        parts.scheduler.step(val.accuracy)
    state.epoch += 1
    state.history.append(
        _epoch_row(state.epoch, train, val, parts.optimizer.param_groups[0]["lr"], size)
    )
    state.train_seconds += state.history[-1]["seconds"]
    if math.isnan(train.loss):
        raise FloatingPointError("the training loss became NaN: lower the learning rate")


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    plan: TrainingPlan,
    *,
    run_dir: str | os.PathLike[str],
    class_names: list[str],
    settings: dict,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    train_epoch: Callable[..., EpochResult] = train_one_epoch,
    preprocessing: Preprocessing | None = None,
) -> pd.DataFrame:
    """Train ``model`` by ``plan``; returns the per-epoch history (also ``history.csv``).

    Each epoch: ``train_epoch`` (by default :func:`train_one_epoch`; pass your own to change
    the step) at the plan's image size for that epoch, then :func:`evaluate` on the
    validation set. ``settings`` (plain values, e.g. ``cfg.to_dict()``) are saved with the
    run; with the plan and the step they decide whether an existing run is reused (finished),
    continued (``resume=True``), replaced (``overwrite=True``) or refused (``RunConflict``).
    ``preprocessing`` (how photos are prepared at evaluation) is saved in the checkpoints, so
    every later prediction prepares photos the same way.
    The model ends with the weights of its best validation epoch. While it trains, the run
    folder is held (:func:`runs.claim`): a second process training the same run gets
    :class:`~catsdogs_helpers.runs.RunConflict` at once.
    Under ``torchrun`` every process calls it with its share of the loaders, and process 0
    alone writes the run (see :mod:`~catsdogs_helpers.distributed`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "plan": plan.to_dict(), "step": step_name(train_epoch)}
    meta = {"settings": settings, "class_names": list(class_names), "model_name": plan.model_name}
    if preprocessing is not None:
        meta["preprocessing"] = preprocessing.to_dict()
    model.to(device, memory_format=torch.channels_last)
    parts = make_training_parts(model, plan, len(train_loader), device, amp_dtype)
    with _begin(run_dir, model, parts, settings, resume=resume, overwrite=overwrite) as started:
        state, done = started
        trained = model if done else distributed.wrap(model, device, plan.fine_tuning is not None)
        while not done:
            reseed_epoch(train_loader, seed_for(settings.get("seed", 0), "epoch", state.epoch))
            _run_epoch(trained, (train_loader, val_loader), parts, plan, state, device=device,
                       amp_dtype=amp_dtype, progress=progress, train_epoch=train_epoch)  # fmt: skip
            done = _record(run_dir, model, parts, state, meta, plan)
        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    return pd.DataFrame(state.history)


def optimiser_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One training step of ``model`` on the fixed batch ``(x, y)``, as a function to time."""

    def step() -> None:
        with autocast(device, amp_dtype):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def images_per_second(
    steps: dict[str, Callable[[], None]],
    batch_size: int,
    device: torch.device,
    *,
    timed: int = 5,
    warmup: int = 2,
) -> dict[str, float]:
    """Images per second of each of ``steps`` (a name to one step on ``batch_size`` images,
    e.g. :func:`optimiser_step`).

    The steps take turns, so a machine that speeds up or slows down while measuring affects
    them all alike. Each rate is the median of ``timed`` steps after ``warmup`` untimed ones
    (the first steps pick kernels).
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(warmup + timed):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: batch_size / float(np.median(t[warmup:])) for name, t in times.items()}


def measure_training_speed(
    model_name: str,
    settings: dict[str, dict],
    *,
    image_size: int = 128,
    batch_size: int = 32,
    device: torch.device | None = None,
    steps: int = 5,
    warmup: int = 2,
) -> dict[str, float]:
    """Training images per second of one optimiser step on random data, for each of
    ``settings`` (a name to keyword arguments: ``amp_dtype``, ``channels_last``), taking
    turns step by step (:func:`images_per_second`)."""
    device = device or torch.device("cpu")
    parts = {}
    for name, options in settings.items():
        unknown = set(options) - {"amp_dtype", "channels_last"}
        if unknown:
            raise TypeError(f"setting {name!r}: unknown options {sorted(unknown)}")
        memory_format = (
            torch.channels_last if options.get("channels_last") else torch.contiguous_format
        )
        model = create_model(model_name, 2).to(device, memory_format=memory_format)
        x = torch.randn(batch_size, 3, image_size, image_size, device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        parts[name] = (model, optimizer, x.contiguous(memory_format=memory_format))
    y = torch.randint(0, 2, (batch_size,), device=device)
    runs = {
        name: optimiser_step(model, optimizer, x, y, device, settings[name].get("amp_dtype"))
        for name, (model, optimizer, x) in parts.items()
    }
    return images_per_second(runs, batch_size, device, timed=steps, warmup=warmup)
