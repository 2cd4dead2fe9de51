"""The run folder ``runs/<RUN_NAME>/``: what identifies a run and what it has written. Work
with the same settings is reused; replacing it with other settings raises
:class:`RunConflict`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import Timeout

from .config import runs_dir
from .plumbing import atomic_path, held

#: The settings that must match for a run's work to be reused or resumed.
IDENTITY = (
    *("seed", "limit_per_class", "model_name", "pretrained", "epochs", "batch_size"),
    *("image_size", "cache_size", "sizes", "optimizer", "lr", "schedule", "weight_decay"),
    *("label_smoothing", "early_stopping", "train_pipeline", "step", "parts", "first_layer"),
)
#: What a run recorded before a setting existed: runs older than whitening learned it.
FORMER = {"first_layer": "learned"}


class RunConflict(RuntimeError):
    """A run folder holds work that these settings would replace or cannot continue."""


def identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's settings that decides whether its work can be reused."""
    return {key: settings.get(key, FORMER.get(key)) for key in IDENTITY}


def differences(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple]:
    """``{name: (then, now)}`` for every identity setting that differs (``parts`` by name)."""
    then, new = identity(before), identity(now)
    out = {}
    for key in IDENTITY:
        if key == "parts" and isinstance(then[key], dict) and isinstance(new[key], dict):
            for name in sorted(set(then[key]) | set(new[key])):
                if then[key].get(name) != new[key].get(name):
                    out[name] = (then[key].get(name), new[key].get(name))
        elif then[key] != new[key]:
            out[key] = (then[key], new[key])
    return out


def _short(value: Any) -> str:
    """A setting as a message shows it: a pipeline by its transforms' names."""
    if isinstance(value, dict) and "transforms" in value:
        return f"[{pipeline_summary(value)}]"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_same_settings(run_dir: Path, before: dict, now: dict, what: str) -> None:
    """Raise :class:`RunConflict` when ``what`` in ``run_dir`` was made with other settings."""
    changed = differences(before, now)
    if changed:
        shown = ", ".join(
            f"{k}: {_short(a)} then, {_short(b)} now" for k, (a, b) in changed.items()
        )
        raise RunConflict(
            f"{run_dir} holds {what} made with other settings ({shown}). Use a new RUN_NAME, "
            "or OVERWRITE=True to replace it."
        )


@contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for training; a second process gets :class:`RunConflict` at once."""
    run_dir = Path(run_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(held(run_dir / ".training.lock", "training", wait=False))
        except Timeout:
            raise RunConflict(
                f"run {run_dir.name!r} ({run_dir}) is being trained by another process right "
                "now. Wait for it to finish (then this run reuses its result), or use a new "
                "RUN_NAME."
            ) from None
        yield


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    return path


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is not there."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_history(run_dir: Path, history: list[dict]) -> Path:
    """``history.csv``: one row per epoch so far."""
    path = run_dir / "history.csv"
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    return path


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` finished training (its ``summary.json`` says so)."""
    return bool((read_json(Path(run_dir) / "summary.json") or {}).get("finished"))


def write_summary(run_dir: Path, settings: dict, state: dict, *, finished: bool) -> Path:
    """``summary.json``: the settings and the state of training, readable without torch."""
    summary = {
        "finished": finished,
        "epochs_run": state["epoch"],
        "best_val_acc": state["best_acc"],
        "train_seconds": state["train_seconds"],
        "settings": settings,
    }
    return write_json(run_dir / "summary.json", summary)


def write_metrics(
    run_dir: Path, metrics: dict, settings: dict, *, overwrite: bool = False, **extra: Any
) -> Path:
    """``metrics.json``: the test metrics, epochs, time and settings; other results or
    settings than those there raise :class:`RunConflict` unless ``overwrite``."""
    history = pd.read_csv(run_dir / "history.csv")
    payload = {
        **{f"test_{k}": v for k, v in metrics.items() if k != "n"},
        "n_test": metrics["n"],
        "epochs_run": int(len(history)),
        "train_seconds": float(history["seconds"].sum()) if len(history) else math.nan,
        "best_val_acc": float(history["val_acc"].max()) if len(history) else math.nan,
        **extra,
        "settings": settings,
    }
    path = run_dir / "metrics.json"
    before = read_json(path)
    if before is not None and not overwrite:
        check_same_settings(run_dir, before.get("settings", {}), settings, "test results")
        changed = [
            k for k in payload if k.startswith("test_") and not _same(before.get(k), payload[k])
        ]
        if changed:
            raise RunConflict(
                f"{path} holds other results ({', '.join(changed)} differ). Use a new "
                "RUN_NAME, or OVERWRITE=True to replace them."
            )
    return write_json(path, payload)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN counting as equal to NaN."""
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return a == b or both_nan


def pipeline_summary(description: dict[str, Any]) -> str:
    """The transforms' names in a :func:`describe_pipeline` record, comma-separated."""
    return ", ".join(
        t["__class_fullname__"].rsplit(".", 1)[-1] for t in description.get("transforms", [])
    )


def runs_table(folder: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per run folder: its settings, accuracies and time."""
    rows = []
    for summary_path in sorted(Path(folder or runs_dir()).glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        settings = summary.get("settings", {})
        metrics = read_json(summary_path.with_name("metrics.json")) or {}
        rows.append(
            {
                "run": summary_path.parent.name,
                "model": settings.get("model_name"),
                "augment": settings.get("augment"),
                "pipeline": pipeline_summary(settings.get("train_pipeline") or {}),
                "image_size": settings.get("image_size"),
                "lr": settings.get("lr"),
                "schedule": settings.get("schedule"),
                "epochs_run": summary.get("epochs_run"),
                "finished": summary.get("finished"),
                "best_val_acc": summary.get("best_val_acc"),
                "test_accuracy": metrics.get("test_accuracy"),
                "train_minutes": round(summary.get("train_seconds", 0) / 60, 1),
            }
        )
    return pd.DataFrame(rows)
