"""Configuration: every path (from the repository root or ``CATSDOGS_*``) and the checked
parameters of a run: a value you set wins, then ``CATSDOGS_<NAME>``, then the default.
:func:`seed_for` derives every seed from ``SEED``."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CATSDOGS_"

#: The Microsoft Cats vs Dogs archive (about 787 MB, CDLA-Permissive-2.0).
DEFAULT_DATASET_URL = (
    "https://download.microsoft.com/download/3/E/1/"
    "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)

MODEL_NAMES = (
    "resnet9",
    "efficientnet_lite0",
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_b0",
)
#: The named training pipelines of ``transforms.PIPELINES``; AUGMENT may also be a file.
AUGMENTS = ("light", "tutorial", "heavy", "none")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "plateau", "constant")
#: Test-time augmentation (``evaluation.tta_views``): each mode and its views of a photo.
TTA_VIEWS = {"none": 1, "flip": 2, "flip_crops": 10}
TTAS = tuple(TTA_VIEWS)
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Where the labels come from (``LABELS``): see ``layouts``.
LABEL_SOURCES = ("folders", "filenames", "csv")
#: Kaggle's file names, ``cat.123.jpg`` and ``dog.45.jpg``: the letters before the first dot.
DEFAULT_LABEL_PATTERN = "^([A-Za-z]+)[._-]"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class ParameterError(ValueError):
    """A parameter has a value of the wrong type or outside what it accepts."""


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter: its name, default (which also fixes its type) and meaning."""

    name: str
    default: str | int | float | bool
    meaning: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("DATA_DIR", "", 'where the photos, manifest and cache go ("": data/)'),
        Parameter("DATASET_URL", "", '"": Microsoft\'s archive; or an http(s) URL or a .zip'),
        Parameter("DATASET_SHA256", "", "the archive's sha256, checked when given"),
        Parameter("RUN_NAME", "default", "everything the run writes goes to runs/<RUN_NAME>/"),
        Parameter("SEED", 42, "split, initialisation, loader order, augmentations", (), 0),
        Parameter(
            "MODEL_NAME",
            "resnet9",
            "resnet9 (1.6 M), efficientnet_lite0, resnet18/34/50, ...",
            MODEL_NAMES,
        ),
        Parameter("PRETRAINED", False, "start from ImageNet weights: see recipes/pretrained.yaml"),
        Parameter("EPOCHS", 22, "passes over the training photos", (), 1),
        Parameter("TIME_BUDGET", 0.0, "minutes of training: the epochs and side that fit", (), 0),
        Parameter("BATCH_SIZE", 128, "photos per step; halved (to 16) for small data sets", (), 1),
        Parameter("IMAGE_SIZE", 96, "side of the crops the model sees (32 or more)", (), 32),
        Parameter(
            "RESIZE_RATIO",
            1.15,
            "shorter side resized to IMAGE_SIZE times this, then cropped",
            (),
            1.0,
        ),
        Parameter("PROGRESSIVE", True, "train on 2/3 of IMAGE_SIZE first, growing to it"),
        Parameter("AUGMENT", "light", "light, tutorial, heavy, none, or a pipeline file (A.save)"),
        Parameter("OPTIMIZER", "sgd", "sgd (Nesterov momentum 0.9) or adam", OPTIMIZERS),
        Parameter(
            "LR", 0.4, "peak learning rate; for sgd per 128 photos, scaled with the batch", (), 0
        ),
        Parameter(
            "SCHEDULE",
            "onecycle",
            "onecycle, plateau (halve after 3 flat epochs) or constant",
            SCHEDULES,
        ),
        Parameter("WEIGHT_DECAY", 5e-4, "L2 penalty on the weights (not biases or norms)", (), 0),
        Parameter("LABEL_SMOOTHING", 0.1, "0: plain cross-entropy", (), 0),
        Parameter(
            "EARLY_STOPPING", 0, "stop after this many epochs without improvement (0: never)", (), 0
        ),
        Parameter("TTA", "flip", "test-time augmentation: none, flip or flip_crops", TTAS),
        Parameter("NUM_WORKERS", -1, "-1: automatic; 0: load in the main process", (), -1),
        Parameter("LIMIT_PER_CLASS", 0, "0: all photos; else a seeded subset per class", (), 0),
        Parameter("DEVICE", "auto", "auto (CUDA, then MPS, then CPU), cuda, mps or cpu", DEVICES),
        Parameter("RESUME", False, "continue an interrupted training run"),
        Parameter("OVERWRITE", False, "replace this run's split, training and results"),
        Parameter("PREDICT_PATH", "", '"": a demo; or a photo or folder of yours'),
        Parameter("DECISION", "", '"": the most likely class; or a rule saved by 05 (Cat-99)'),
        Parameter("LABELS", "folders", "folders (one per class), filenames or csv", LABEL_SOURCES),
        Parameter(
            "LABEL_PATTERN", DEFAULT_LABEL_PATTERN, 'with LABELS "filenames": group 1 is the label'
        ),
        Parameter("LABELS_CSV", "", 'with LABELS "csv": path,label ("": labels.csv by the photos)'),
        Parameter("WEIGHTS_PATH", "", '"": download; or a .pth of torchvision\'s ImageNet weights'),
    )
}


def is_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules


def project_root() -> Path:
    """``CATSDOGS_HOME``, else this (editable) repository, else ``/content/catsdogs`` on Colab
    or ``~/catsdogs``: the folder that holds ``data/`` and ``runs/``."""
    home = os.environ.get(ENV_PREFIX + "HOME")
    if home:
        return Path(home).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "notebooks").is_dir():
        return repo
    return Path("/content/catsdogs") if is_colab() else Path.home() / "catsdogs"


def data_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """``value`` (``DATA_DIR``), ``CATSDOGS_DATA_DIR``, or ``data/`` at the project root."""
    value = value or os.environ.get(ENV_PREFIX + "DATA_DIR")
    return (Path(value).expanduser() if value else project_root() / "data").resolve()


def runs_dir() -> Path:
    """The folder that holds one sub-folder per run (``CATSDOGS_RUNS_DIR`` or ``runs/``)."""
    value = os.environ.get(ENV_PREFIX + "RUNS_DIR")
    return (Path(value).expanduser() if value else project_root() / "runs").resolve()


#: What ``RUN_NAME`` may be: :data:`RUN_NAME_RULE` in words.
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
RUN_NAME_RULE = (
    "1 to 64 characters, each a letter (A-Z, a-z), a digit, '-', '_' or '.', not starting with '.'"
)


def _cut(text: str, limit: int) -> str:
    """``text`` as a message quotes it: its repr, of its first ``limit`` characters."""
    return repr(text[:limit]) + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def run_dir(run_name: str) -> Path:
    """The folder of one run, not created; a bad ``RUN_NAME`` raises :class:`ParameterError`."""
    if not isinstance(run_name, str) or not RUN_NAME_PATTERN.fullmatch(run_name):
        shown = _cut(run_name, 64) if isinstance(run_name, str) else repr(run_name)
        raise ParameterError(f"RUN_NAME={shown} is not a usable folder name: use {RUN_NAME_RULE}.")
    return runs_dir() / run_name


def _fail(param: Parameter, value: Any, source: str, accepts: str) -> ParameterError:
    return ParameterError(f"{param.name}={value!r} ({source}) is not valid: {accepts}.")


def _as_bool(param: Parameter, value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    words = str(value).strip().lower() if isinstance(value, str | int) else None
    if words in TRUE_WORDS or words in FALSE_WORDS:
        return words in TRUE_WORDS
    raise _fail(param, value, source, "use True or False (or 1/0, yes/no, on/off)")


def _as_number(param: Parameter, value: Any, source: str) -> int | float:
    whole = isinstance(param.default, int)
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if whole and number is not None:
        number = int(number) if float(number).is_integer() else None
    low = param.minimum
    if number is None or number != number or (low is not None and number < low):
        wanted = ("a whole number" if whole else "a number") + (
            f" of at least {low:g}" if low is not None else ""
        )
        raise _fail(param, value, source, f"use {wanted} ({param.meaning})")
    return number if whole else float(number)


def _as_str(param: Parameter, value: Any, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | os.PathLike):
        raise _fail(param, value, source, f"use text ({param.meaning})")
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value).strip()
    if param.choices and text not in param.choices:
        shown = ", ".join(repr(c) for c in param.choices)
        raise _fail(param, value, source, f"use one of {shown}")
    return text


def parse_value(name: str, value: Any, source: str = "given") -> str | int | float | bool:
    """``value`` converted to the type of ``name``'s default (``"3"`` -> 3, ``"yes"`` -> True);
    raises :class:`ParameterError`."""
    param = PARAMETERS[name]
    if isinstance(param.default, bool):
        return _as_bool(param, value, source)
    if isinstance(param.default, int | float):
        return _as_number(param, value, source)
    return _as_str(param, value, source)


def unknown_names(names) -> list[str]:
    """Messages for names that are no parameter, each with the closest match if any."""
    out = []
    for name in names:
        if name not in PARAMETERS:
            out.append(f"{name} is not a parameter of this series{_did_you_mean(name, PARAMETERS)}")
    return out


def _did_you_mean(name: str, known, prefix: str = "") -> str:
    """`` (did you mean X?)`` with the closest of ``known`` (``prefix`` before it), or ""."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


#: ``CATSDOGS_*`` variables that are no parameter.
OTHER_VARIABLES = ("HOME", "RUNS_DIR", "PROGRESS", "DEV_ZIP")


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise :class:`ParameterError` for a ``CATSDOGS_*`` variable that names no parameter."""
    names = [k[len(ENV_PREFIX) :] for k in environ if k.startswith(ENV_PREFIX)]
    problems = []
    for name in sorted(set(names) - set(PARAMETERS) - set(OTHER_VARIABLES)):
        hint = _did_you_mean(name, [*PARAMETERS, *OTHER_VARIABLES], ENV_PREFIX)
        problems.append(f"the environment variable {ENV_PREFIX}{name} is no parameter{hint}")
    if problems:
        raise ParameterError("; ".join(problems) + ": unset it, or correct its name")


def read_parameters(
    given: Mapping[str, Any], *, explicit: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every parameter's checked value, from ``given`` (other names ignored), ``CATSDOGS_*``
    and defaults; a given value wins when it differs from the default, or with ``explicit``."""
    environ = os.environ if environ is None else environ
    check_environment(environ)
    values = {}
    for name, param in PARAMETERS.items():
        value, source = param.default, "the default"
        if name in given and (explicit or given[name] != param.default):
            value, source = given[name], "given with -p" if explicit else "set in the notebook"
        elif ENV_PREFIX + name in environ:
            value, source = environ[ENV_PREFIX + name], f"from {ENV_PREFIX}{name}"
        values[name] = parse_value(name, value, source)
    return values


#: The longest class label: it is a folder's name, a column's (``p_<label>``) and in messages.
MAX_LABEL = 100


def check_label(label: str) -> str:
    """``label`` if it has 1 to :data:`MAX_LABEL` characters and no control character; else
    :class:`ParameterError`."""
    if 0 < len(label) <= MAX_LABEL and not any(unicodedata.category(c) == "Cc" for c in label):
        return label
    raise ParameterError(
        f"the class label {_cut(label, MAX_LABEL)} is not usable: use 1 to {MAX_LABEL} "
        "characters and no control characters (newlines, tabs). Rename its class folder, or "
        "correct it in LABELS_CSV or in what LABEL_PATTERN captures."
    )


@dataclass(frozen=True)
class Layout:
    """How the photos' labels are read (``LABELS``, ``LABEL_PATTERN``, ``LABELS_CSV``)."""

    source: str = "folders"  # "folders", "filenames" or "csv"
    pattern: str = DEFAULT_LABEL_PATTERN  # filenames: a regular expression, group 1 the label
    csv_path: Path | None = None  # csv: the table of path,label; None: labels.csv by the photos

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "pattern": self.pattern,
            "csv_path": str(self.csv_path or ""),
        }


def make_layout(source: str, pattern: str, labels_csv: str, data_dir: Path) -> Layout:
    """The :class:`Layout` of the three parameters (a relative ``LABELS_CSV`` is inside
    ``data_dir``); an unusable pattern or a setting for another ``LABELS`` raises."""
    if pattern != DEFAULT_LABEL_PATTERN and source != "filenames":
        raise ParameterError(
            f"LABEL_PATTERN={pattern!r} is only read with LABELS='filenames', not "
            f"LABELS={source!r}: set LABELS='filenames' too, or leave LABEL_PATTERN as it was."
        )
    if labels_csv and source != "csv":
        raise ParameterError(
            f"LABELS_CSV={labels_csv!r} is only read with LABELS='csv', not LABELS={source!r}: "
            "set LABELS='csv' too, or leave LABELS_CSV empty."
        )
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        raise ParameterError(
            f"LABEL_PATTERN={pattern!r} is not a regular expression: {err}."
        ) from None
    if groups < 1:
        raise ParameterError(
            f"LABEL_PATTERN={pattern!r} has no group: put the part of the name that is the "
            f"label in parentheses, as in {DEFAULT_LABEL_PATTERN!r} for cat.123.jpg."
        )
    csv_path = Path(labels_csv).expanduser() if labels_csv else None
    if csv_path is not None and not csv_path.is_absolute():
        csv_path = data_dir / csv_path
    return Layout(source, pattern, csv_path)


def seed_for(seed: int, purpose: str, epoch: int = 0) -> int:
    """The seed for ``purpose``: ``SEED`` itself, or for an ``epoch`` ``SEED * 1000 + epoch``,
    so a resumed run repeats an uninterrupted one."""
    if purpose in ("split", "model", "loader", "augment"):
        return seed
    if purpose == "epoch":
        return seed * 1000 + epoch
    raise ValueError(f"purpose {purpose!r} is unknown: use split, model, loader, augment or epoch")


#: Small data sets get smaller batches, so an epoch has at least this many optimiser steps.
MIN_STEPS_PER_EPOCH = 40
MIN_AUTO_BATCH = 16
#: SGD's ``LR`` is the rate for batches of this many photos; other batches scale it linearly.
LR_BATCH = 128
#: Pretrained layers learn at this share of the new head's rate (after the head's epoch).
BACKBONE_LR_SCALE = 0.1


@dataclass(frozen=True)
class FineTuning:
    """The new head alone for ``head_epochs``, then all layers, the backbone at
    ``backbone_lr_scale`` times the rate (a random head would spoil good features)."""

    head_epochs: int
    backbone_lr_scale: float


@dataclass(frozen=True)
class RunConfig:
    """The checked settings of one run: one field per parameter (lower case)."""

    data_dir: Path
    dataset_url: str
    dataset_sha256: str
    run_name: str
    seed: int
    model_name: str
    pretrained: bool
    epochs: int
    time_budget: float
    batch_size: int
    image_size: int
    resize_ratio: float
    progressive: bool
    augment: str
    optimizer: str
    lr: float
    schedule: str
    weight_decay: float
    label_smoothing: float
    early_stopping: int
    tta: str
    num_workers: int
    limit_per_class: int
    device: str
    resume: bool
    overwrite: bool
    predict_path: str
    decision: str
    layout: Layout = field(default_factory=Layout)
    weights_path: str = ""

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run_name)

    @property
    def cache_size(self) -> int:
        """The shorter side photos are resized to (and the decoded cache's square side)."""
        return max(self.image_size, round(self.image_size * self.resize_ratio))

    @property
    def eval_size(self) -> int:
        """The side of the evaluation centre crop."""
        return self.image_size

    @property
    def fine_tuning(self) -> FineTuning | None:
        """With pretrained weights, the head alone in the first epoch; else None."""
        if not self.pretrained:
            return None
        return FineTuning(1, BACKBONE_LR_SCALE)

    def sizes(self, stages: int = 5) -> tuple[int, ...]:
        """The training image side of each epoch; ``PROGRESSIVE``: ``stages`` steps (multiples
        of 8) from 2/3 of ``IMAGE_SIZE`` up to it."""
        size, epochs = self.image_size, self.epochs
        if not self.progressive:
            return (size,) * epochs
        first = max(32, size * 2 / 3)
        steps = [first + (size - first) * k / (stages - 1) for k in range(stages - 1)]
        sizes = sorted({min(size, int(round(s / 8) * 8)) for s in steps} | {size})
        return tuple(sizes[min(len(sizes) - 1, e * len(sizes) // epochs)] for e in range(epochs))

    def for_data(self, n_train: int) -> RunConfig:
        """This configuration for ``n_train`` photos: the batch halved (to 16) until an epoch
        has :data:`MIN_STEPS_PER_EPOCH` steps, and SGD's rate scaled with the batch."""
        size = self.batch_size
        while size > MIN_AUTO_BATCH and n_train < MIN_STEPS_PER_EPOCH * size:
            size //= 2
        size = max(size, min(MIN_AUTO_BATCH, self.batch_size))
        lr = self.lr * size / LR_BATCH if self.optimizer == "sgd" else self.lr
        return dataclasses.replace(self, batch_size=size, lr=lr)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``summary.json``, ``metrics.json`` and checkpoints."""
        out = dataclasses.asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["layout"] = self.layout.to_dict()
        out["cache_size"] = self.cache_size
        out["sizes"] = list(self.sizes())
        out["fine_tuning"] = dataclasses.asdict(self.fine_tuning) if self.pretrained else None
        return out


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


#: The most loader workers chosen automatically for a GPU (see :func:`default_num_workers`).
MAX_GPU_WORKERS = 8


def default_num_workers(accelerator: bool = False) -> int:
    """Loader workers: on the CPU 0 on two cores or fewer, else up to 4; on a GPU all cores
    but one, up to :data:`MAX_GPU_WORKERS`, shared by ``torchrun``'s processes."""
    cores = available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if accelerator:
        return max(0, min(MAX_GPU_WORKERS, cores - 1))
    return 0 if cores <= 2 else min(4, cores - 1)


def trains_on_cuda(device: str) -> bool:
    """True when ``DEVICE`` (auto or cuda) will train on a CUDA GPU (imports torch)."""
    if device not in ("auto", "cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def _check(p: dict[str, Any]) -> None:
    """Check what the parameters say together."""
    if p["WEIGHTS_PATH"] and not p["PRETRAINED"]:
        raise ParameterError(
            f"WEIGHTS_PATH={p['WEIGHTS_PATH']!r} is set but PRETRAINED=False: set "
            "PRETRAINED=True to start from those weights, or leave WEIGHTS_PATH empty."
        )
    if p["WEIGHTS_PATH"] and not Path(p["WEIGHTS_PATH"]).expanduser().is_file():
        raise ParameterError(
            f"WEIGHTS_PATH={p['WEIGHTS_PATH']!r} is not a file: give the absolute path of a "
            ".pth of torchvision's ImageNet weights (or leave it empty to download them)."
        )
    if p["AUGMENT"] not in AUGMENTS and not p["AUGMENT"].endswith((".json", ".yaml", ".yml")):
        raise ParameterError(
            f"AUGMENT={p['AUGMENT']!r} is not valid: use one of "
            f"{', '.join(map(repr, AUGMENTS))}, or a pipeline file saved with A.save (.json)."
        )
    sha256 = p["DATASET_SHA256"]
    if sha256 and not re.fullmatch(r"[0-9A-Fa-f]{64}", sha256):
        raise ParameterError(
            f"DATASET_SHA256={_cut(sha256, 80)} is not a sha256: give the archive's 64 "
            "hexadecimal digits (as sha256sum prints them), or leave it empty to skip the check."
        )
    run_dir(p["RUN_NAME"])  # checks the name


def make_config(**values: Any) -> RunConfig:
    """A checked :class:`RunConfig` from values by name, the rest defaults (no environment)."""
    problems = unknown_names(values)
    if problems:
        raise ParameterError("; ".join(problems))
    p = {n: parse_value(n, values.get(n, spec.default), "given") for n, spec in PARAMETERS.items()}
    _check(p)
    fields = {name.lower(): value for name, value in p.items()}
    for name in ("labels", "label_pattern", "labels_csv"):
        del fields[name]
    workers = p["NUM_WORKERS"]
    if workers < 0:
        workers = default_num_workers(trains_on_cuda(p["DEVICE"]))
    folder = data_dir(p["DATA_DIR"])
    fields.update(
        data_dir=folder,
        dataset_url=p["DATASET_URL"] or DEFAULT_DATASET_URL,
        dataset_sha256=p["DATASET_SHA256"].lower(),
        num_workers=workers,
        layout=make_layout(p["LABELS"], p["LABEL_PATTERN"], p["LABELS_CSV"], folder),
    )
    return RunConfig(**fields)


#: Upper-case names of the notebooks that are no parameter (the Colab cell's).
NOTEBOOK_NAMES = ("IS_COLAB",)


def unknown_values(namespace: Mapping[str, Any]) -> list[str]:
    """Messages for upper-case plain values in a namespace that are no parameter (a misspelt
    papermill ``-p``)."""
    plain = (str, int, float, bool, type(None))
    names = [
        name
        for name, value in namespace.items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]+", name) and isinstance(value, plain)
    ]
    return unknown_names(n for n in names if n not in NOTEBOOK_NAMES)


def from_parameters(namespace: Mapping[str, Any]) -> RunConfig:
    """The run's configuration from a notebook's ``globals()`` and ``CATSDOGS_*``; an unknown
    upper-case value raises :class:`ParameterError`."""
    problems = unknown_values(namespace)
    if problems:
        raise ParameterError("; ".join(problems))
    return make_config(**read_parameters(namespace))
