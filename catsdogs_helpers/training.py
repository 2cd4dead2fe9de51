"""Training: the loop, its schedule, checkpoints that resume, and early stopping.

Each epoch writes ``last.pt`` (everything needed to resume: model, optimizer, scheduler,
gradient scaler, random states, history) and, when validation accuracy improves, ``best.pt``.
Both are written to a temporary name and renamed, so a killed run never leaves a half-written
checkpoint behind. ``history.csv`` grows by one row per epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .devices import autocast, to_model_input
from .evaluation import predict
from .files import atomic_path
from .models import create_model

log = logging.getLogger(__name__)

#: Settings that must match for a finished or interrupted run to be reused or resumed.
RUN_IDENTITY = (
    "recipe", "model_name", "epochs", "batch_size", "image_size", "cache_size", "seed",
    "limit_per_class", "pretrained",
)  # fmt: skip


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or does not fit."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``sgd`` (Nesterov momentum 0.9, no decay on biases and norms) or ``adam``."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
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


def reseed_epoch(loader, seed: int) -> None:
    """Seed one epoch's shuffling and augmentations from ``seed`` alone.

    Each epoch's data order and augmentations then depend only on the run's seed and the
    epoch number, so a run resumed after epoch k repeats exactly what an uninterrupted run
    would have done. (Worker processes take their seeds from the loader's generator.)
    """
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    transform = getattr(getattr(loader, "dataset", None), "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


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


def _write_summary(run_dir: Path, params: dict, state: dict, *, finished: bool) -> None:
    """``summary.json``: the settings and the state of training, readable without torch."""
    summary = {
        "finished": finished,
        "epochs_run": state["epoch"],
        "best_val_acc": state["best_acc"],
        "train_seconds": state["train_seconds"],
        "params": params,
    }
    with atomic_path(run_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


def _identity(params: dict) -> dict:
    return {k: params.get(k) for k in RUN_IDENTITY}


def existing_run(run_dir: str | os.PathLike[str]) -> dict | None:
    """The ``last.pt`` checkpoint of a run folder, or None when nothing was trained there."""
    path = Path(run_dir) / "last.pt"
    return load_checkpoint(path) if path.is_file() else None


def train(
    model: nn.Module,
    train_loader,
    val_loader,
    *,
    run_dir: str | os.PathLike[str],
    class_names: list[str],
    params: dict,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    epochs: int = 10,
    optimizer: str = "sgd",
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    label_smoothing: float = 0.1,
    early_stopping: int = 0,
    channels_last: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    epoch_transform: Callable[[int], Any] | None = None,
) -> pd.DataFrame:
    """Train ``model`` and return the per-epoch history (also in ``run_dir/history.csv``).

    - A finished run with the same settings (``params``) is not trained again: its best
      weights are loaded into ``model`` and its history returned.
    - An interrupted run continues from ``last.pt`` with ``resume=True``; ``overwrite=True``
      starts again. Without either, an interrupted run is an error, never silently replaced.
    - ``epoch_transform(epoch)``, when given, returns the training transform for that epoch
      (progressive resizing: smaller images first).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(train_loader))
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    scheduler = make_scheduler(opt, schedule, epochs=epochs, steps_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    state = {"epoch": 0, "best_acc": -1.0, "since_best": 0, "history": [], "train_seconds": 0.0}
    previous = existing_run(run_dir) if not overwrite else None
    if previous is not None:
        if _identity(previous["params"]) != _identity(params):
            changed = {
                k: (previous["params"].get(k), params.get(k))
                for k in RUN_IDENTITY
                if previous["params"].get(k) != params.get(k)
            }
            raise ValueError(
                f"run folder {run_dir} was trained with other settings ({changed}, as "
                "(then, now)). Use a new RUN_NAME, or OVERWRITE=True to replace that run."
            )
        if previous["finished"]:
            log.info("%s already holds a finished run: loading it, not training again", run_dir)
            best = load_checkpoint(best_path)
            model.load_state_dict(best["model"])
            return pd.DataFrame(previous["history"])
        if not resume:
            raise RuntimeError(
                f"{run_dir} holds an unfinished run (epoch {previous['epoch']} of {epochs}). "
                "Set RESUME=True to continue it, OVERWRITE=True to start again, or use a new "
                "RUN_NAME."
            )
        model.load_state_dict(previous["model"])
        opt.load_state_dict(previous["optimizer"])
        scheduler.load_state_dict(previous["scheduler"])
        scaler.load_state_dict(previous["scaler"])
        _set_rng_state(previous["rng"])
        state = {k: previous[k] for k in state}
        log.info("resuming %s after epoch %d", run_dir.name, state["epoch"])
    elif overwrite:
        for stale in (last_path, best_path, run_dir / "history.csv", run_dir / "summary.json"):
            stale.unlink(missing_ok=True)

    def checkpoint(finished: bool) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "params": params,
            "class_names": list(class_names),
            "model_name": params.get("model_name", ""),
            "finished": finished,
            **state,
        }

    while state["epoch"] < epochs:
        epoch = state["epoch"]
        if epoch_transform is not None:
            train_loader.dataset.transform = epoch_transform(epoch)
        reseed_epoch(train_loader, int(params.get("seed", 0)) * 1000 + epoch)
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for step, (images, labels) in enumerate(bar):
            if len(labels) == 0:
                continue
            x = to_model_input(images, device, channels_last=channels_last)
            y = labels.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                logits = model(x)
            loss = criterion(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if schedule == "onecycle":
                scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if step % 10 == 0 or step == steps_per_epoch - 1:
                bar.set_postfix(
                    loss=f"{loss_sum.item() / seen:.3f}",
                    acc=f"{correct.item() / seen:.3f}",
                    lr=f"{opt.param_groups[0]['lr']:.3g}",
                )
        train_seconds = time.perf_counter() - start
        probs, val_labels, _ = predict(model, val_loader, device, amp_dtype=amp_dtype)
        val_acc = float((probs.argmax(1) == val_labels).mean()) if len(val_labels) else 0.0
        picked = probs[np.arange(len(val_labels)), val_labels] if len(val_labels) else probs
        val_loss = float(-np.log(np.clip(picked, 1e-7, 1)).mean()) if len(val_labels) else 0.0
        if schedule == "plateau":
            scheduler.step(val_acc)
        epoch_seconds = time.perf_counter() - start
        state["train_seconds"] += epoch_seconds
        state["epoch"] = epoch + 1
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / max(1, seen),
            "train_acc": correct.item() / max(1, seen),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": epoch_seconds,
            "train_images_per_s": seen / max(train_seconds, 1e-9),
            "image_size": int(x.shape[-1]) if seen else 0,
        }
        state["history"].append(row)
        improved = val_acc > state["best_acc"]
        if improved:
            state["best_acc"], state["since_best"] = val_acc, 0
        else:
            state["since_best"] += 1
        stop = early_stopping > 0 and state["since_best"] >= early_stopping
        done = stop or state["epoch"] >= epochs
        if improved:
            _atomic_save(checkpoint(finished=False), best_path)
        _atomic_save(checkpoint(finished=done), last_path)
        with atomic_path(run_dir / "history.csv") as tmp:
            pd.DataFrame(state["history"]).to_csv(tmp, index=False)
        _write_summary(run_dir, params, state, finished=done)
        log.info(
            "epoch %d/%d: train loss %.3f acc %.3f | val loss %.3f acc %.4f%s | %.0fs",
            epoch + 1, epochs, row["train_loss"], row["train_acc"], val_loss, val_acc,
            " (best so far, saved)" if improved else "", epoch_seconds,
        )  # fmt: skip
        if math.isnan(row["train_loss"]):
            raise FloatingPointError("the training loss became NaN: lower the learning rate")
        if stop:
            log.info("no better validation accuracy for %d epochs: stopping", early_stopping)
            break
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model"])
    return pd.DataFrame(state["history"])


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
    ``settings`` (a name to keyword arguments: ``amp_dtype``, ``channels_last``).

    The settings take turns step by step, so a machine that speeds up or slows down while
    measuring affects them all alike. Each rate is the median of ``steps`` timed steps
    after ``warmup`` untimed ones (the first steps pick kernels).
    """
    device = device or torch.device("cpu")
    runs = {}
    for name, options in settings.items():
        unknown = set(options) - {"amp_dtype", "channels_last"}
        if unknown:
            raise TypeError(f"setting {name!r}: unknown options {sorted(unknown)}")
        memory_format = (
            torch.channels_last if options.get("channels_last") else torch.contiguous_format
        )
        model = create_model(model_name, 2).to(device, memory_format=memory_format)
        x = torch.randn(batch_size, 3, image_size, image_size, device=device)
        runs[name] = {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            "x": x.contiguous(memory_format=memory_format),
            "amp_dtype": options.get("amp_dtype"),
            "times": [],
        }
    y = torch.randint(0, 2, (batch_size,), device=device)
    for _ in range(warmup + steps):
        for run in runs.values():
            start = time.perf_counter()
            with autocast(device, run["amp_dtype"]):
                loss = nn.functional.cross_entropy(run["model"](run["x"]).float(), y)
            run["optimizer"].zero_grad(set_to_none=True)
            loss.backward()
            run["optimizer"].step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            run["times"].append(time.perf_counter() - start)
    return {name: batch_size / float(np.median(r["times"][warmup:])) for name, r in runs.items()}
