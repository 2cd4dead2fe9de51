"""Training: one epoch, one evaluation, the optimiser and schedule, and :func:`fit`, which adds
checkpoints (``last.pt`` written first, so a run killed while saving is repaired from it),
resuming, progressive resizing, early stopping and fine-tuning (the new head alone first)."""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import runs
from .config import FineTuning, RunConfig, seed_for
from .devices import autocast, to_model_input
from .models import create_model, first_layer_of, fold_batch_norms, forward_in_chunks, head_of
from .plumbing import atomic_path, progress_bar, remove_stale_temporaries
from .tools import distributed
from .transforms import Preprocessing, describe_pipeline, save_pipeline

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable (truncated, or tampered with), or does not fit."""


@dataclass(frozen=True)
class EpochResult:
    """What one pass over a loader measured. ``loss`` is what the optimiser minimised; ``nll``
    is the plain cross-entropy, comparable between training and validation."""

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
    for module in model.modules():  # a frozen backbone's batch norms keep their statistics
        if isinstance(module, torch.nn.BatchNorm2d) and not module.weight.requires_grad:
            module.eval()
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
    model = fold_batch_norms(model)  # eval mode, each batch norm folded into its conv
    totals = torch.zeros(2, device=device)  # summed NLL, right answers
    seen, start = 0, time.perf_counter()
    for images, labels, *_ in loader:
        x = to_model_input(images, device)
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = forward_in_chunks(model, x).float()
        nll = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        totals += torch.stack([nll, (logits.argmax(1) == y).sum()])
        seen += len(y)
    nll, accuracy = (totals / max(seen, 1)).tolist()
    return EpochResult(nll, nll, accuracy, seen, time.perf_counter() - start)


def fit_head(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    amp_dtype: torch.dtype | None = None,
    image_size: int | None = None,
    progress: bool = True,
    **_: Any,
) -> EpochResult:
    """A head-only epoch: the frozen layers' features computed once, then L-BFGS on the output
    layer to the minimum of plain cross-entropy plus weight decay; ``scheduler`` steps per batch."""
    head, start = head_of(distributed.unwrap(model)), time.perf_counter()
    batches = head_inputs(model, loader, device, amp_dtype=amp_dtype, image_size=image_size,
                          progress=progress)  # fmt: skip
    if scheduler is not None:
        with warnings.catch_warnings():  # the schedule moves on without an optimiser step
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for _ in batches:
                scheduler.step()
    if not batches:  # no batch to learn from: nothing changes, as with train_one_epoch
        return EpochResult(0.0, 0.0, 0.0, 0, time.perf_counter() - start)
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    _converge(head, distributed.gather(x), distributed.gather(y), optimizer)
    with torch.no_grad():  # the result over this process's share, as train_one_epoch's
        logits = head(x)
        nll = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(1) == y).float().mean().item()
    return EpochResult(nll, nll, accuracy, len(y), time.perf_counter() - start)


def head_inputs(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    image_size: int | None = None,
    progress: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(what the output layer takes, labels)`` for each batch of ``loader``, in float32:
    the model in eval mode (batch norms' statistics, no dropout), without gradients."""
    found, batches, model = [], [], fold_batch_norms(model)  # eval mode, as in evaluate
    hook = head_of(model).register_forward_hook(
        lambda module, inputs, output: found.append(inputs[0])
    )
    try:
        with torch.no_grad():
            for images, y in progress_bar(loader, desc="features", disable=not progress):
                with autocast(device, amp_dtype):
                    forward_in_chunks(model, to_model_input(images, device, size=image_size))
                batches.append((torch.cat(found).float(), y.to(device)))
                found.clear()
    finally:
        hook.remove()
    return batches


def _converge(head: nn.Linear, x, y, optimizer) -> None:
    """``head`` at the minimum of cross-entropy on ``(x, y)`` plus its group's weight decay."""
    groups = optimizer.param_groups
    mine = (g for g in groups if any(p is head.weight for p in g["params"]))
    decay = next(mine, {"weight_decay": 0.0})["weight_decay"]
    lbfgs = torch.optim.LBFGS(
        head.parameters(), max_iter=300, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        lbfgs.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + decay / 2 * head.weight.square().sum()
        loss.backward()
        return loss

    lbfgs.step(closure)


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
    model: nn.Module, lr: float, weight_decay: float, fine_tuning: FineTuning | None = None
) -> list[dict]:
    """The optimiser's parameter groups, with and without weight decay; fine-tuning: the output
    layer at ``lr``, every other parameter at ``lr * fine_tuning.backbone_lr_scale``."""
    if fine_tuning is None:
        params = [p for p in model.parameters() if p.requires_grad]
        return _decay_groups(params, lr, weight_decay)
    head = {id(p) for p in head_of(model).parameters()}
    head_params = [p for p in model.parameters() if id(p) in head]
    backbone = [p for p in model.parameters() if id(p) not in head]
    backbone_lr = lr * fine_tuning.backbone_lr_scale
    return _decay_groups(head_params, lr, weight_decay) + _decay_groups(
        backbone, backbone_lr, weight_decay
    )


def trains_backbone(fine_tuning: FineTuning | None, epoch: int) -> bool:
    """Whether epoch ``epoch`` (from 0) trains all layers: always from scratch; with
    pretrained weights, not in the first ``fine_tuning.head_epochs``."""
    return fine_tuning is None or epoch >= fine_tuning.head_epochs


def set_trainable(model: nn.Module, fine_tuning: FineTuning | None, epoch: int) -> None:
    """Freeze the pretrained layers in a head-only epoch, unfreeze them after (from scratch: no
    change); :func:`train_one_epoch` keeps frozen batch norms in eval mode."""
    if fine_tuning is None:
        return
    everything = trains_backbone(fine_tuning, epoch)
    head = {id(p) for p in head_of(model).parameters()}
    for param in model.parameters():
        param.requires_grad_(everything or id(param) in head)


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """``OPTIMIZER`` at ``LR``: SGD with Nesterov momentum 0.9, or Adam, over
    :func:`parameter_groups` (no decay on biases and norms; pretrained layers slower)."""
    groups = parameter_groups(model, cfg.lr, cfg.weight_decay, cfg.fine_tuning)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    raise ValueError(f"OPTIMIZER={cfg.optimizer!r} is unknown: use 'sgd' or 'adam'")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
    """The learning-rate schedule ``SCHEDULE`` names. :func:`fit` steps it after every batch,
    except ``ReduceLROnPlateau``, which it steps after each validation with its accuracy.

    - ``onecycle``: warm up from LR/20 to LR over the first quarter of training, then
      anneal (cosine) to LR/4000;
    - ``plateau``: LR until 3 epochs bring no better validation accuracy, then half of it;
    - ``constant``: LR throughout (None: no scheduler).
    """
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(10, cfg.epochs * steps_per_epoch),  # tiny runs need a few steps
            pct_start=0.25,
            div_factor=20.0,
            final_div_factor=200.0,
        )
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=3
        )
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"SCHEDULE={cfg.schedule!r} is unknown: use onecycle, plateau or constant")


def per_epoch(scheduler) -> bool:
    """True for a scheduler that steps on the validation accuracy, after each epoch."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


_VOLATILE = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter")


def _plain(values: dict) -> dict:
    """The settings among an optimiser group's or a scheduler's values: plain, not state."""
    plain = (int, float, str, bool, type(None))
    kept = (k for k, v in values.items() if isinstance(v, plain) and k[0] != "_")
    return {k: values[k] for k in kept if k not in _VOLATILE}


def describe_parts(optimizer, scheduler, loss_fn: nn.Module) -> dict[str, Any]:
    """What the optimiser, the schedule and the loss are, in plain values: part of a run's
    identity, so a run trained with other parts is never taken for this one."""
    return {
        "optimizer_class": type(optimizer).__qualname__,
        "optimizer_groups": [_plain(g) for g in optimizer.param_groups],
        "scheduler_class": type(scheduler).__qualname__ if scheduler is not None else None,
        "scheduler_args": _plain(scheduler.state_dict()) if scheduler is not None else {},
        "loss": repr(loss_fn),
    }


@dataclass
class TrainingParts:
    """What :func:`fit` trains with: optimiser, schedule (or None), gradient scaler, loss."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module


def reseed_epoch(loader, seed: int) -> None:
    """Seed one epoch's shuffling and augmentations from ``seed`` alone; with a
    ``DistributedSampler`` all processes shuffle alike, each augments by its own seed."""
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
    if hasattr(loader, "set_random_seed"):  # a loader that crops and flips on the device
        loader.set_random_seed(seed)


def train_pipeline_of(loader) -> Any:
    """The pipeline a training loader augments with: its own when it augments on the device
    (:class:`~catsdogs_helpers.datasets.DeviceCropFlip`), else its dataset's (or None)."""
    pipeline = getattr(loader, "pipeline", None)
    return pipeline if pipeline is not None else getattr(loader.dataset, "transform", None)


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


#: Words of PyTorch's advice to load a refused file unsafely: never passed on.
_UNSAFE_ADVICE = ("weights_only", "safe_globals", "trust", "allowlist", "can still be loaded")


def _reason(err: Exception) -> str:
    """Why ``torch.load`` refused a file, in one line, without advice to load it unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # PyTorch prints some advice in bold
    sentences = (s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text))
    kept = [s for s in sentences if s and not any(w in s.lower() for w in _UNSAFE_ADVICE)]
    reason = " ".join(kept[:2])
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``: nothing in it can run), with a clear
    error when it is bad: one that never advises loading it another way."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (notebook 04)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is unreadable or possibly malicious: it may be truncated or tampered with, "
            f"and it was not loaded ({_reason(err)}). Do not load it another way: train again "
            "into a new RUN_NAME, or with OVERWRITE=True to replace it."
        ) from None  # PyTorch's own message advises loading it unsafely


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
    scheduler = parts.scheduler
    return {
        "model": model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": parts.scaler.state_dict(),
        "rng": _rng_state(),
        "finished": finished,
        **meta,
        **vars(state),
    }


def _restore(model, parts: TrainingParts, previous: dict) -> FitState:
    model.load_state_dict(previous["model"])
    parts.optimizer.load_state_dict(previous["optimizer"])
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(previous["scheduler"])
    parts.scaler.load_state_dict(previous["scaler"])
    _set_rng_state(previous["rng"])
    return _state(previous)


def _state(checkpoint: dict) -> FitState:
    return FitState(**{k: checkpoint[k] for k in vars(FitState())})


def _save_records(run_dir: Path, checkpoint: dict) -> None:
    """What follows ``last.pt``: ``best.pt`` at a best epoch, ``history.csv``, ``summary.json``."""
    if checkpoint["since_best"] == 0:  # the best epoch: best.pt is last.pt, unfinished
        _atomic_save({**checkpoint, "finished": False}, run_dir / "best.pt")
    runs.write_history(run_dir, checkpoint["history"])
    runs.write_summary(run_dir, checkpoint["settings"], checkpoint, finished=checkpoint["finished"])


def _read_records(run_dir: Path) -> tuple[dict, list[dict]] | None:
    """``summary.json`` and the rows of ``history.csv``; None when either is missing or bad."""
    try:
        summary = runs.read_json(run_dir / "summary.json") or {}
        return summary, pd.read_csv(run_dir / "history.csv").to_dict("records")
    except (OSError, ValueError):
        return None


def _repair(run_dir: Path, last: dict) -> None:
    """Rewrite the records after ``last.pt`` from it when a kill while saving left them behind."""
    summary, rows = _read_records(run_dir) or ({}, None)
    count = len(rows) if rows is not None else -1
    told = (summary.get("epochs_run"), summary.get("finished"), count)
    if told == (last["epoch"], last["finished"], last["epoch"]):
        return
    log.warning(
        "%s: history.csv or summary.json is behind last.pt (epoch %d), as a run stopped while "
        "saving leaves them: rewriting them (and best.pt) from last.pt",
        run_dir,
        last["epoch"],
    )
    _save_records(run_dir, last)


def _finished_from_best(run_dir: Path, settings: dict) -> FitState | None:
    """A finished run's state from ``best.pt`` and records agreeing with it, else None."""
    records = _read_records(run_dir)
    if records is None:
        return None
    summary, rows = records
    try:
        best = load_checkpoint(run_dir / "best.pt")
    except CheckpointError:
        return None
    agree = summary.get("finished") is True and summary.get("epochs_run") == len(rows)
    agree = agree and summary.get("best_val_acc") == best.get("best_acc")
    if not agree or runs.differences(best.get("settings", {}), settings):
        return None
    since_best, seconds = len(rows) - best.get("epoch", 0), summary.get("train_seconds", 0.0)
    return FitState(len(rows), best["best_acc"], since_best, seconds, rows)


def _read_last(run_dir: Path, settings: dict, overwrite: bool) -> dict | FitState | None:
    """``last.pt``, or None; unreadable: None with ``overwrite``, else a finished state or raise."""
    last = run_dir / "last.pt"
    if not last.is_file():
        return None
    try:
        return load_checkpoint(last)
    except CheckpointError:
        if overwrite:
            log.warning("%s is unreadable: OVERWRITE=True trains the run again", last)
            return None
        finished = _finished_from_best(run_dir, settings)
        if finished is None:
            raise
        log.warning(
            "%s is unreadable, but best.pt holds this finished run's best model, trained with "
            "these settings: loading it (set OVERWRITE=True to train again for a new last.pt)",
            last,
        )
        return finished


def _start(run_dir: Path, model, parts, settings: dict, cfg: RunConfig) -> tuple[FitState, bool]:
    """``(state, finished)``: a finished run reused (even to overwrite), resumed, or fresh."""
    overwrite = cfg.overwrite and distributed.is_main()
    previous = _read_last(run_dir, settings, overwrite)
    if isinstance(previous, FitState):
        return previous, True
    before = previous.get("settings", {}) if previous else {}
    same = previous is not None and not runs.differences(before, settings)
    if same and distributed.is_main():
        _repair(run_dir, previous)
    if same and previous["finished"]:
        log.info("%s already holds a finished run: loading it, not training again", run_dir)
        return _state(previous), True
    if overwrite:
        for stale in ("last.pt", "best.pt", "history.csv", "summary.json", "metrics.json"):
            (run_dir / stale).unlink(missing_ok=True)
    if overwrite or previous is None:
        return FitState(), False
    runs.check_same_settings(run_dir, before, settings, "a training run")
    if not cfg.resume:
        raise runs.RunConflict(
            f"{run_dir} holds an unfinished run (epoch {previous['epoch']} of "
            f"{settings['epochs']}). Set RESUME=True to continue it, OVERWRITE=True "
            "to start again, or use a new RUN_NAME."
        )
    log.info("resuming %s after epoch %d", run_dir.name, previous["epoch"])
    return _restore(model, parts, previous), False


#: What :func:`fit` writes into the run folder (atomically, through a temporary sibling).
WRITTEN = ("last.pt", "best.pt", "history.csv", "summary.json", "train_pipeline.json")


@contextmanager
def _begin(run_dir: Path, model, parts, settings: dict, cfg: RunConfig):
    """:func:`_start` with the run folder claimed, on process 0 first; the others only read."""
    with ExitStack() as stack:
        with distributed.main_first():
            if distributed.is_main():
                stack.enter_context(runs.claim(run_dir))
                _remove_stale_temporaries(run_dir)
            started = _start(run_dir, model, parts, settings, cfg)
        yield started


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Remove what saves killed half-way left beside :data:`WRITTEN` (the folder is claimed)."""
    removed = [p.name for name in WRITTEN for p in remove_stale_temporaries(run_dir / name)]
    if removed:
        log.info("removed temporary files a stopped save left in %s: %s", run_dir, removed)


def _validate(model, val_loader, device: torch.device, amp_dtype) -> EpochResult:
    """:func:`evaluate` over all processes' shares, with process 0's batch-norm statistics."""
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


def _record(run_dir: Path, model, parts, state: FitState, meta: dict, cfg: RunConfig) -> bool:
    """Update ``state``, process 0 writes the run; True after the last epoch or an early stop."""
    row = state.history[-1]
    improved = row["val_acc"] > state.best_acc
    state.best_acc = max(state.best_acc, row["val_acc"])
    state.since_best = 0 if improved else state.since_best + 1
    stop = cfg.early_stopping > 0 and state.since_best >= cfg.early_stopping
    done = stop or state.epoch >= cfg.epochs
    if distributed.is_main():
        checkpoint = _checkpoint(model, parts, state, meta, done)
        _atomic_save(checkpoint, run_dir / "last.pt")  # first: the rest can be made from it
        _save_records(run_dir, checkpoint)
        _log_epoch(state, cfg.epochs, improved)
    distributed.barrier()
    if stop:
        log.info("no better validation accuracy for %d epochs: stopping", cfg.early_stopping)
    return done


def _log_epoch(state: FitState, epochs: int, improved: bool) -> None:
    row = {**state.history[-1], "of": epochs, "best": " (best so far, saved)" if improved else ""}
    log.info(
        "epoch %(epoch)d/%(of)d: train loss %(train_loss).3f (plain %(train_nll).3f) acc "
        "%(train_acc).3f | val loss %(val_loss).3f acc %(val_acc).4f%(best)s | %(seconds).0fs",
        row,
    )


@dataclass(frozen=True)
class _Loop:
    """What stays the same from epoch to epoch of one :func:`fit`."""

    model: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper
    loaders: tuple  # (train, val)
    parts: TrainingParts
    cfg: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    progress: bool
    train_epoch: Callable[..., EpochResult]


def _run_epoch(loop: _Loop, state: FitState) -> None:
    """One epoch of :func:`fit`: train at this epoch's size, validate, add the row to ``state``."""
    (train_loader, val_loader), parts = loop.loaders, loop.parts
    model = distributed.unwrap(loop.model)
    size = loop.cfg.sizes()[state.epoch]
    set_trainable(model, loop.cfg.fine_tuning, state.epoch)
    batch_scheduler = None if per_epoch(parts.scheduler) else parts.scheduler
    step = loop.train_epoch
    if _fits_head(loop.cfg, step) and not trains_backbone(loop.cfg.fine_tuning, state.epoch):
        step = fit_head  # the new layer alone, on features computed once: to convergence
    train = step(
        loop.model,
        train_loader,
        parts.optimizer,
        parts.loss_fn,
        loop.device,
        scheduler=batch_scheduler,
        scaler=parts.scaler,
        amp_dtype=loop.amp_dtype,
        image_size=size,
        progress=loop.progress and distributed.is_main(),
    )
    train = distributed.reduce_result(train)
    val = _validate(model, val_loader, loop.device, loop.amp_dtype)
    if per_epoch(parts.scheduler):
        parts.scheduler.step(val.accuracy)
    state.epoch += 1
    lr = parts.optimizer.param_groups[0]["lr"]
    state.history.append(_epoch_row(state.epoch, train, val, lr, size))
    state.train_seconds += state.history[-1]["seconds"]
    if math.isnan(train.loss):
        raise FloatingPointError("the training loss became NaN: lower the learning rate")


def _fits_head(cfg: RunConfig, train_epoch: Callable) -> bool:
    """Whether head-only epochs use :func:`fit_head`: pretrained weights and the package's step."""
    return cfg.fine_tuning is not None and train_epoch is train_one_epoch


def run_settings(
    cfg: RunConfig, train_loader, parts: TrainingParts, train_epoch: Callable, model: nn.Module
) -> dict[str, Any]:
    """The settings a run records and is compared by: the configuration, the training
    pipeline (``A.to_dict``), the step, the optimiser, the schedule, the loss and whether
    ResNet-9's first layer is whitened."""
    pipeline = train_pipeline_of(train_loader)
    step = step_name(train_epoch) + (" + fit_head" if _fits_head(cfg, train_epoch) else "")
    return {
        **cfg.to_dict(),
        "train_pipeline": describe_pipeline(pipeline) if pipeline is not None else None,
        "step": step,
        "parts": describe_parts(parts.optimizer, parts.scheduler, parts.loss_fn),
        "first_layer": first_layer_of(model),
    }


def _training_parts(cfg: RunConfig, optimizer, scheduler, loss_fn, device, amp_dtype):
    """The parts :func:`fit` trains with; ``loss_fn`` defaults to ``LABEL_SMOOTHING``'s."""
    loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainingParts(optimizer, scheduler, scaler, loss_fn)


def _checkpoint_meta(settings: dict, class_names, cfg: RunConfig, preprocessing) -> dict:
    """What every checkpoint of the run holds besides weights and state."""
    meta = {"settings": settings, "class_names": list(class_names), "model_name": cfg.model_name}
    if preprocessing is not None:
        meta["preprocessing"] = preprocessing.to_dict()
    return meta


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    cfg: RunConfig,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    loss_fn: nn.Module | None = None,
    class_names: list[str],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    train_epoch: Callable[..., EpochResult] = train_one_epoch,
    preprocessing: Preprocessing | None = None,
) -> pd.DataFrame:
    """Train ``model`` for ``cfg.epochs`` epochs; returns the history (also ``history.csv``).

    Each epoch: ``train_epoch`` at its size, then :func:`evaluate`. The settings decide whether a
    run is reused, resumed (``RESUME``), replaced (``OVERWRITE``) or refused (``RunConflict``).
    The model ends with its best epoch's weights; under ``torchrun``, process 0 writes the run."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = _training_parts(cfg, optimizer, scheduler, loss_fn, device, amp_dtype)
    settings = run_settings(cfg, train_loader, parts, train_epoch, model)
    meta = _checkpoint_meta(settings, class_names, cfg, preprocessing)
    model.to(device, memory_format=torch.channels_last)
    with _begin(run_dir, model, parts, settings, cfg) as (state, done):
        if distributed.is_main() and settings["train_pipeline"] is not None:
            save_pipeline(train_pipeline_of(train_loader), run_dir / "train_pipeline.json")
        trained = model if done else distributed.wrap(model, device, cfg.pretrained)
        loaders = (train_loader, val_loader)
        loop = _Loop(trained, loaders, parts, cfg, device, amp_dtype, progress, train_epoch)
        first = state.epoch
        if not done and distributed.is_main():
            log.info(plan_message(cfg, len(train_loader.dataset), first))
        while not done:
            reseed_epoch(train_loader, seed_for(cfg.seed, "epoch", state.epoch))
            _run_epoch(loop, state)
            done = _record(run_dir, model, parts, state, meta, cfg)
            if state.epoch == first + 1 and not done and distributed.is_main():
                log.info(expected_message(cfg, state))
        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    return pd.DataFrame(state.history)


def plan_message(cfg: RunConfig, n_train: int, start: int) -> str:
    """What :func:`fit` is about to train, in a line, before it starts: with the time it
    should take where notebook 04's speed table measured the step (``speed.json``)."""
    sizes = cfg.sizes()[start:]
    side = f"{sizes[0]} px" if len(set(sizes)) == 1 else f"{sizes[0]} to {sizes[-1]} px"
    start_words = f", from epoch {start + 1}" if start else ""
    line = (
        f"training {cfg.model_name} in {cfg.run_dir}: {len(sizes)} epochs{start_words} at "
        f"{side} on {n_train} photos"
    )
    speed = runs.read_json(cfg.run_dir / "speed.json")
    measured = speed and (speed["key"]["model"], speed["key"]["size"])
    if measured != (cfg.model_name, cfg.image_size):
        return line + "; the time it needs follows the first epoch"
    rate = max(speed["images_per_s"].values())  # the fastest setting: the one training uses
    seconds = training_seconds(cfg, sizes, n_train, rate, start)
    return line + f": about {seconds / 60:.0f} min at the {rate:.0f} images/s measured before"


#: A forward pass without gradients (validation; a pretrained start's head-only epoch, whose
#: features are computed once) against a training step: about a third, or less.
FORWARD_COST = 1 / 3


def epoch_cost(cfg: RunConfig, epoch: int, size: int) -> float:
    """Epoch ``epoch``'s (from 0) cost against one at ``IMAGE_SIZE`` that trains every layer:
    the square of its side, times :data:`FORWARD_COST` for a head-only epoch."""
    head_only = not trains_backbone(cfg.fine_tuning, epoch)
    return (size / cfg.image_size) ** 2 * (FORWARD_COST if head_only else 1.0)


def training_seconds(
    cfg: RunConfig, sizes, n_train: int, images_per_s: float, start: int = 0
) -> float:
    """The seconds ``n_train`` photos take over epochs of ``sizes`` (from epoch ``start``) at
    ``images_per_s``, the rate of an epoch at ``IMAGE_SIZE`` (:func:`epoch_cost`)."""
    costs = [epoch_cost(cfg, epoch, size) for epoch, size in enumerate(sizes, start)]
    return n_train * sum(costs) / images_per_s


def expected_message(cfg: RunConfig, state: FitState) -> str:
    """After the first epoch: how long the rest will take at its measured rate (costs as
    :func:`epoch_cost`), and when it ends."""
    last = state.history[-1]
    per_cost = last["seconds"] / epoch_cost(cfg, state.epoch - 1, last["image_size"])
    rest = enumerate(cfg.sizes()[state.epoch :], state.epoch)
    left = sum(per_cost * epoch_cost(cfg, epoch, size) for epoch, size in rest)
    end = time.strftime("%H:%M", time.localtime(time.time() + left))
    return (
        f"epoch {state.epoch} took {last['seconds']:.0f} s: the other "
        f"{cfg.epochs - state.epoch} need about {left / 60:.0f} min more (until about {end})"
    )


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
    """Images per second of each of ``steps`` (a name to one step on ``batch_size`` images):
    the median of ``timed`` steps after ``warmup``, taking turns so drift affects all alike."""
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
    saved: Path | None = None,
) -> dict[str, float]:
    """Training images per second for each of ``settings`` (a name to ``amp_dtype`` and
    ``channels_last``); with ``saved`` (JSON), a measure of the same arguments is reused."""
    device = device or torch.device("cpu")
    key = {"model": model_name, "size": image_size, "batch": batch_size, "device": str(device)}
    key["settings"] = {name: {k: str(v) for k, v in o.items()} for name, o in settings.items()}
    before = runs.read_json(saved) if saved is not None else None
    if before is not None and before.get("key") == key:
        log.info("the speed measured before, saved in %s (delete it to measure again)", saved)
        return before["images_per_s"]
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
    stepping = {
        name: optimiser_step(model, optimizer, x, y, device, settings[name].get("amp_dtype"))
        for name, (model, optimizer, x) in parts.items()
    }
    speed = images_per_second(stepping, batch_size, device, timed=steps, warmup=warmup)
    if saved is not None:
        runs.write_json(saved, {"key": key, "images_per_s": speed})
    return speed
