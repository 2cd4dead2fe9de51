"""Configuration: where things live, the parameters of a run, and what is derived from them.

Every path comes from here: the repository root (found from this file, not from the current
folder) or a ``CATSDOGS_*`` environment variable.

**Parameters.** Each notebook's ``parameters`` cell holds plain values (the defaults of
:data:`PARAMETERS`). One call, :func:`from_parameters`, reads them and checks every value:

1. a value you set (by editing the cell, or with ``papermill -p NAME VALUE``) wins;
2. a value left at its default is taken from ``CATSDOGS_<NAME>`` when that is set;
3. otherwise the default.

The series runner (``python -m catsdogs_helpers.series``) checks its ``-p`` values with the
same code before it runs the first notebook. A wrong type or value raises
:class:`ParameterError`, naming the parameter, where the value came from and what it accepts.

**Seeds.** :func:`seed_for` is the one place that derives every seed from ``SEED``.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CATSDOGS_"

#: The Microsoft Cats vs Dogs archive (about 787 MB, CDLA-Permissive-2.0).
DEFAULT_DATASET_URL = (
    "https://download.microsoft.com/download/3/E/1/"
    "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)

MODEL_NAMES = ("resnet9", "resnet18", "resnet34", "resnet50", "efficientnet_b0")
RECIPES = ("fast", "tutorial")
AUGMENTS = ("light", "tutorial", "heavy", "none")
#: Test-time augmentation (see ``evaluation.tta_views``): each mode and how many views of a
#: photo it averages, its cost in forward passes.
TTA_VIEWS = {"none": 1, "flip": 2, "flip_crops": 10}
TTAS = tuple(TTA_VIEWS)
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Where the labels come from (the ``LABELS`` parameter; "" is "folders"): see ``layouts``.
LABEL_SOURCES = ("", "folders", "filenames", "csv")
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
    default: str | int | bool
    meaning: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("DATA_DIR", "", 'where the photos, manifest and cache go ("": data/)'),
        Parameter("DATASET_URL", "", '"": Microsoft\'s archive; or an http(s) URL or a .zip'),
        Parameter("DATASET_SHA256", "", "the archive's sha256, checked when given"),
        Parameter("RUN_NAME", "default", "everything the run writes goes to runs/<RUN_NAME>/"),
        Parameter("SEED", 42, "split, initialisation, loader order, augmentations", (), 0),
        Parameter("RECIPE", "fast", '"fast" (ours) or "tutorial"', RECIPES),
        Parameter("MODEL_NAME", "", '"": the recipe\'s', ("", *MODEL_NAMES)),
        Parameter("AUGMENT", "", '"": the recipe\'s training pipeline', ("", *AUGMENTS)),
        Parameter("EPOCHS", 0, "0: the recipe's", (), 0),
        Parameter("BATCH_SIZE", 0, "0: the recipe's, smaller for small data sets", (), 0),
        Parameter("IMAGE_SIZE", 0, "0: the recipe's; else 32 or more", (), 0),
        Parameter("NUM_WORKERS", -1, "-1: automatic; 0: load in the main process", (), -1),
        Parameter("LIMIT_PER_CLASS", 0, "0: all photos; else a seeded subset per class", (), 0),
        Parameter("DEVICE", "auto", "auto (CUDA, then MPS, then CPU), cuda, mps or cpu", DEVICES),
        Parameter("PRETRAINED", False, "start from ImageNet weights (downloads them once)"),
        Parameter("RESUME", False, "continue an interrupted training run"),
        Parameter("OVERWRITE", False, "replace this run's split, training and results"),
        Parameter("PREDICT_PATH", "", '"": a demo; or a photo or folder of yours'),
        Parameter("TTA", "", '"": the recipe\'s; none, flip or flip_crops', ("", *TTAS)),
        Parameter("LABELS", "", '"": class folders; "filenames" or "csv"', LABEL_SOURCES),
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
    """The folder that holds ``data/`` and ``runs/``.

    ``CATSDOGS_HOME`` wins; otherwise the repository this package was installed from (an
    editable install); otherwise ``/content/catsdogs`` on Colab or ``~/catsdogs`` elsewhere.
    """
    home = os.environ.get(ENV_PREFIX + "HOME")
    if home:
        return Path(home).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "notebooks").is_dir():
        return repo
    if is_colab():
        return Path("/content/catsdogs")
    return Path.home() / "catsdogs"


def data_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """Where downloads, the manifest and the decoded cache live.

    ``value`` (a notebook's ``DATA_DIR``) wins, then ``CATSDOGS_DATA_DIR``, then ``data/`` at
    the project root.
    """
    value = value or os.environ.get(ENV_PREFIX + "DATA_DIR")
    path = Path(value).expanduser() if value else project_root() / "data"
    return path.resolve()


def runs_dir() -> Path:
    """The folder that holds one sub-folder per run (``CATSDOGS_RUNS_DIR`` or ``runs/``)."""
    value = os.environ.get(ENV_PREFIX + "RUNS_DIR")
    return (Path(value).expanduser() if value else project_root() / "runs").resolve()


def run_dir(run_name: str) -> Path:
    """The folder of one run: checkpoints, history, metrics, figures, executed notebooks.

    Only computed and checked here; whoever writes into it creates it.
    """
    if not run_name or any(c in run_name for c in "/\\") or run_name in {".", ".."}:
        raise ParameterError(
            f"RUN_NAME={run_name!r} is not a usable folder name: use letters, digits, '-' or '_'."
        )
    return runs_dir() / run_name


# ---------------------------------------------------------------------------- parameters


def _fail(param: Parameter, value: Any, source: str, accepts: str) -> ParameterError:
    return ParameterError(f"{param.name}={value!r} ({source}) is not valid: {accepts}.")


def _as_bool(param: Parameter, value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    words = str(value).strip().lower() if isinstance(value, str | int) else None
    if words in TRUE_WORDS or words in FALSE_WORDS:
        return words in TRUE_WORDS
    raise _fail(param, value, source, "use True or False (or 1/0, yes/no, on/off)")


def _as_int(param: Parameter, value: Any, source: str) -> int:
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    low = param.minimum
    if number is None or (low is not None and number < low):
        wanted = "a whole number" + (f" of at least {low}" if low is not None else "")
        raise _fail(param, value, source, f"use {wanted} ({param.meaning})")
    return number


def _as_str(param: Parameter, value: Any, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | os.PathLike):
        raise _fail(param, value, source, f"use text ({param.meaning})")
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value).strip()
    if param.choices and text not in param.choices:
        shown = ", ".join(repr(c) for c in param.choices)
        raise _fail(param, value, source, f"use one of {shown}")
    return text


def parse_value(name: str, value: Any, source: str = "given") -> str | int | bool:
    """``value`` checked and converted to the type of parameter ``name``'s default.

    Text from the environment is parsed (``"3"`` -> 3, ``"yes"`` -> True); anything that does
    not fit raises :class:`ParameterError` naming the parameter, ``source`` and what it takes.
    """
    param = PARAMETERS[name]
    if isinstance(param.default, bool):
        return _as_bool(param, value, source)
    if isinstance(param.default, int):
        return _as_int(param, value, source)
    return _as_str(param, value, source)


def unknown_names(names) -> list[str]:
    """Messages for names that are no parameter, each with the closest match if any."""
    out = []
    for name in names:
        if name not in PARAMETERS:
            close = difflib.get_close_matches(name, PARAMETERS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            out.append(f"{name} is not a parameter of this series{hint}")
    return out


def read_parameters(
    given: Mapping[str, Any], *, explicit: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, str | int | bool]:
    """Every parameter's checked value, from ``given`` values, ``CATSDOGS_*`` and defaults.

    ``given`` may hold other names (a notebook's ``globals()``); only parameters are read.
    A given value wins over the environment when it differs from the default, or always
    with ``explicit=True`` (the series runner's ``-p`` values).
    """
    environ = os.environ if environ is None else environ
    values = {}
    for name, param in PARAMETERS.items():
        value, source = param.default, "the default"
        if name in given and (explicit or given[name] != param.default):
            value, source = given[name], "given with -p" if explicit else "set in the notebook"
        elif ENV_PREFIX + name in environ:
            value, source = environ[ENV_PREFIX + name], f"from {ENV_PREFIX}{name}"
        values[name] = parse_value(name, value, source)
    return values


# ------------------------------------------------------------------------------- recipes

#: Small data sets get smaller batches, so an epoch has at least this many optimiser steps.
MIN_STEPS_PER_EPOCH = 40
MIN_AUTO_BATCH = 16


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: everything the ``RECIPE`` parameter switches at once, and the
    rules that adapt it to other batch sizes, image sizes and data sets."""

    name: str
    model_name: str
    image_size: int  # the crop the model sees at the end of training
    cache_size: int  # square side of the decoded uint8 cache; evaluation uses its centre
    epochs: int
    batch_size: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    weight_decay: float
    schedule: str  # "onecycle" or "plateau"
    label_smoothing: float
    augment: str  # one of AUGMENTS: the training pipeline (transforms.train_transforms)
    early_stopping: int  # epochs without improvement before stopping (0 = never)
    tta: str  # test-time augmentation, one of TTAS: "flip" averages the image and its mirror
    progressive: bool  # train on smaller images first (2/3 of image_size), growing to full

    def cache_size_for(self, image_size: int) -> int:
        """The cache side for another crop size, keeping the recipe's margin (110 -> 96)."""
        return max(image_size, round(image_size * self.cache_size / self.image_size))

    def batch_size_for(self, n_train: int) -> int:
        """The recipe's batch, halved (down to 16) until an epoch of ``n_train`` images has
        at least :data:`MIN_STEPS_PER_EPOCH` steps: a few hundred photos in batches of 128
        give the optimiser too few steps to learn anything in a few epochs."""
        size = self.batch_size
        while size > MIN_AUTO_BATCH and n_train < MIN_STEPS_PER_EPOCH * size:
            size //= 2
        return max(size, min(MIN_AUTO_BATCH, self.batch_size))

    def lr_for(self, batch_size: int) -> float:
        """The learning rate for ``batch_size``: scaled linearly for SGD, as is for Adam."""
        if self.optimizer == "sgd":
            return self.lr * batch_size / self.batch_size
        return self.lr

    def sizes_for(self, image_size: int, epochs: int, stages: int = 5) -> tuple[int, ...]:
        """The training image side of each epoch. Progressive resizing: ``stages`` steps from
        2/3 of ``image_size`` up to it (multiples of 8), spread evenly over the epochs. Small
        images early are cheap and teach coarse shapes; the last epochs see the full size."""
        if not self.progressive:
            return (image_size,) * epochs
        first = max(32, image_size * 2 / 3)
        steps = [first + (image_size - first) * k / (stages - 1) for k in range(stages - 1)]
        sizes = sorted({min(image_size, int(round(s / 8) * 8)) for s in steps} | {image_size})
        return tuple(sizes[min(len(sizes) - 1, e * len(sizes) // epochs)] for e in range(epochs))


RECIPE_DEFAULTS: dict[str, Recipe] = {
    # Ours: a small network trained well. ResNet-9 on a decoded-once cache, bf16 +
    # channels_last, one-cycle SGD, label smoothing, crop + flip, progressive resizing
    # (64 -> 96 px), and flip averaging at test time.
    "fast": Recipe(
        name="fast", model_name="resnet9", image_size=96, cache_size=110, epochs=22,
        batch_size=128, optimizer="sgd", lr=0.2, weight_decay=5e-4, schedule="onecycle",
        label_smoothing=0.1, augment="light", early_stopping=0, tta="flip", progressive=True,
    ),
    # The tutorial's recipe, its defects fixed: ResNet-50 from scratch, 128 px crops of 160 px
    # images, Adam 1e-3, reduce-on-plateau (0.5, patience 3), early stopping (5), 10 epochs.
    "tutorial": Recipe(
        name="tutorial", model_name="resnet50", image_size=128, cache_size=160, epochs=10,
        batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="plateau",
        label_smoothing=0.0, augment="tutorial", early_stopping=5, tta="none", progressive=False,
    ),
}  # fmt: skip


# ---------------------------------------------------------------------- pretrained starts

#: What ``PRETRAINED=True`` changes when ``IMAGE_SIZE`` and ``EPOCHS`` are left at 0. 224 px is
#: the crop torchvision's ImageNet weights were trained at (their ``weights.transforms()``
#: ``crop_size``, as a test checks): features learnt at one scale work best at that scale. On
#: a CPU it is slow (see the README); ``IMAGE_SIZE=128`` trains about four times faster.
PRETRAINED_IMAGE_SIZE = 224
#: One epoch for the new output layer alone, one for all layers: what fastai's
#: ``fine_tune(1)`` does, enough for ImageNet features on cats and dogs.
PRETRAINED_EPOCHS = 2
#: The new output layer's peak learning rate as a share of the recipe's. SGD's 0.2 (per 128
#: images) is for a network that learns from scratch and would wreck ImageNet features;
#: Adam's 1e-3 is already the usual rate for fine-tuning.
PRETRAINED_LR_SCALE = {"sgd": 0.1, "adam": 1.0}
#: The pretrained layers learn at this share of the new layer's rate once they train: they
#: need only small corrections (discriminative learning rates).
BACKBONE_LR_SCALE = 0.1


@dataclass(frozen=True)
class FineTuning:
    """How a plan trains pretrained weights: the new output layer (the *head*) alone for
    ``head_epochs`` epochs, the rest (the *backbone*) frozen, then all layers, the backbone at
    ``backbone_lr_scale`` times the head's learning rate. A random new head would send large,
    meaningless gradients into good features; trained first, it does not."""

    head_epochs: int
    backbone_lr_scale: float


def fine_tuning_for(epochs: int) -> FineTuning:
    """The fine-tuning of a pretrained run of ``epochs`` epochs: the head alone in the first
    epoch (when there are at least two), then everything at :data:`BACKBONE_LR_SCALE`."""
    return FineTuning(head_epochs=1 if epochs > 1 else 0, backbone_lr_scale=BACKBONE_LR_SCALE)


@dataclass(frozen=True)
class TrainingPlan:
    """Everything that decides how a model is trained, resolved for one data set: what
    :func:`catsdogs_helpers.training.fit` runs, and what a finished run is compared by."""

    model_name: str
    pretrained: bool
    augment: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    label_smoothing: float
    early_stopping: int
    sizes: tuple[int, ...] = field(default=())  # the training image side of each epoch
    fine_tuning: FineTuning | None = None  # pretrained weights: what trains when; None: all

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sizes"] = list(self.sizes)
        return out


# ----------------------------------------------------------------------------- the labels


@dataclass(frozen=True)
class Layout:
    """How the photos' labels are read, from ``LABELS``, ``LABEL_PATTERN`` and ``LABELS_CSV``
    (:mod:`catsdogs_helpers.layouts` reads them)."""

    source: str = "folders"  # "folders", "filenames" or "csv"
    pattern: str = DEFAULT_LABEL_PATTERN  # filenames: a regular expression, group 1 the label
    csv_path: Path | None = None  # csv: the table of path,label; None: labels.csv by the photos

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "pattern": self.pattern,
                "csv_path": str(self.csv_path or "")}  # fmt: skip


def make_layout(labels: str, pattern: str, labels_csv: str, data_dir: Path) -> Layout:
    """The :class:`Layout` the three parameters describe; a relative ``LABELS_CSV`` is inside
    ``data_dir``. A pattern that is no regular expression or has no group, or a pattern or
    CSV set for another ``LABELS``, raises :class:`ParameterError`."""
    source = labels or "folders"
    if pattern != DEFAULT_LABEL_PATTERN and source != "filenames":
        raise ParameterError(
            f"LABEL_PATTERN={pattern!r} is only read with LABELS='filenames', not "
            f"LABELS={labels!r}: set LABELS='filenames' too, or leave LABEL_PATTERN as it was."
        )
    if labels_csv and source != "csv":
        raise ParameterError(
            f"LABELS_CSV={labels_csv!r} is only read with LABELS='csv', not LABELS={labels!r}: "
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


# ------------------------------------------------------------------------------ the run


def seed_for(seed: int, purpose: str, epoch: int = 0) -> int:
    """The one place every seed is derived from ``SEED``.

    - ``split``: the split of the files (the same split for every recipe).
    - ``model``: the model's initial weights (:func:`training.seed_everything` before
      building it).
    - ``loader``: the loaders' base generators.
    - ``augment``: the training pipeline's generator before the first epoch.
    - ``epoch``: each epoch's data order and augmentations, ``SEED * 1000 + epoch``, so an
      epoch depends only on the seed and its number, and a resumed run repeats exactly
      what an uninterrupted one would have done. Under ``torchrun`` every process shuffles
      by it (one order, each process its share) and process ``r > 0`` augments by a seed
      drawn from it and ``r`` (:func:`catsdogs_helpers.distributed.process_seed`).
    """
    if purpose in ("split", "model", "loader", "augment"):
        return seed
    if purpose == "epoch":
        return seed * 1000 + epoch
    raise ValueError(f"purpose {purpose!r} is unknown: use split, model, loader, augment or epoch")


@dataclass(frozen=True)
class RunConfig:
    """The checked settings of one run, built by :func:`make_config` or
    :func:`from_parameters`. ``batch_size`` 0 means "the recipe's, for the data set"."""

    data_dir: Path
    dataset_url: str
    dataset_sha256: str
    run_name: str
    seed: int
    recipe: Recipe
    model_name: str
    augment: str
    epochs: int
    batch_size: int
    image_size: int
    cache_size: int
    num_workers: int
    limit_per_class: int
    device: str
    pretrained: bool
    resume: bool
    overwrite: bool
    predict_path: str
    tta: str
    layout: Layout = field(default_factory=Layout)
    weights_path: str = ""

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run_name)

    @property
    def eval_size(self) -> int:
        """The side of evaluation images: a centre crop the size of the last training crops."""
        return self.image_size

    def plan(self, n_train: int) -> TrainingPlan:
        """The training plan for ``n_train`` training images (batch and learning rate adapt
        to small data sets unless ``BATCH_SIZE`` is set).

        Pretrained weights get their fine-tuning (:func:`fine_tuning_for`), a lower rate
        (:data:`PRETRAINED_LR_SCALE`) and every epoch at full size: progressive resizing
        would show them a scale they were not trained at."""
        recipe = self.recipe
        batch_size = self.batch_size or recipe.batch_size_for(n_train)
        lr = recipe.lr_for(batch_size)
        sizes = recipe.sizes_for(self.image_size, self.epochs)
        if self.pretrained:
            lr *= PRETRAINED_LR_SCALE[recipe.optimizer]
            sizes = (self.image_size,) * self.epochs
        return TrainingPlan(
            model_name=self.model_name, pretrained=self.pretrained, augment=self.augment,
            epochs=self.epochs, batch_size=batch_size, optimizer=recipe.optimizer, lr=lr,
            weight_decay=recipe.weight_decay, schedule=recipe.schedule,
            label_smoothing=recipe.label_smoothing, early_stopping=recipe.early_stopping,
            sizes=sizes, fine_tuning=fine_tuning_for(self.epochs) if self.pretrained else None,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``metrics.json`` and checkpoints."""
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["recipe"] = self.recipe.name
        out["layout"] = self.layout.to_dict()
        return out


def available_cores() -> int:
    """CPU cores this process may run on (fewer than the machine has when it is confined)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


#: The most loader workers chosen automatically for a GPU (see :func:`default_num_workers`).
MAX_GPU_WORKERS = 8


def default_num_workers(accelerator: bool = False) -> int:
    """Loader workers that pay off here.

    Training on the CPU, workers take cores from the model: 0 on one or two cores, else up
    to 4. Training on a GPU, the cores have nothing else to do than prepare batches (the
    training process itself needs one): all of them but one, up to
    :data:`MAX_GPU_WORKERS` (more only add start-up time to every epoch; measure with
    ``benchmarks/benchmark.py --only loader``). Under ``torchrun`` the cores are shared by
    the processes on this machine (``LOCAL_WORLD_SIZE``).
    """
    cores = available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if accelerator:
        return max(0, min(MAX_GPU_WORKERS, cores - 1))
    return 0 if cores <= 2 else min(4, cores - 1)


def _check_weights_path(path: str, pretrained: bool) -> None:
    """A WEIGHTS_PATH is for a pretrained start and must exist: said now, not after the data
    are cached (``models.load_imagenet_weights`` checks that the file fits the model)."""
    if path and not pretrained:
        raise ParameterError(
            f"WEIGHTS_PATH={path!r} is set but PRETRAINED=False: set PRETRAINED=True to start "
            "from those weights, or leave WEIGHTS_PATH empty."
        )
    if path and not Path(path).expanduser().is_file():
        raise ParameterError(
            f"WEIGHTS_PATH={path!r} is not a file: give the absolute path of a .pth of "
            "torchvision's ImageNet weights (or leave it empty to download them)."
        )


def trains_on_cuda(device: str) -> bool:
    """True when ``DEVICE`` (auto or cuda) will train on a CUDA GPU. Imports PyTorch, which
    this module otherwise does without; only called to pick the number of loader workers."""
    if device not in ("auto", "cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def make_config(**values: Any) -> RunConfig:
    """A checked :class:`RunConfig` from parameter values given by name (the rest take their
    defaults; the environment is not read, see :func:`from_parameters`).

    Raises :class:`ParameterError` naming the parameter and what it accepts.
    """
    problems = unknown_names(values)
    if problems:
        raise ParameterError("; ".join(problems))
    p = {n: parse_value(n, values.get(n, spec.default), "given") for n, spec in PARAMETERS.items()}
    recipe, pretrained = RECIPE_DEFAULTS[p["RECIPE"]], p["PRETRAINED"]
    image_size = p["IMAGE_SIZE"] or (PRETRAINED_IMAGE_SIZE if pretrained else recipe.image_size)
    epochs = p["EPOCHS"] or (PRETRAINED_EPOCHS if pretrained else recipe.epochs)
    if image_size < 32:
        raise ParameterError(f"IMAGE_SIZE={image_size} is too small: use 32 or more (0 = recipe).")
    _check_weights_path(p["WEIGHTS_PATH"], pretrained)
    run_dir(p["RUN_NAME"])  # checks the name
    folder = data_dir(p["DATA_DIR"])
    layout = make_layout(p["LABELS"], p["LABEL_PATTERN"], p["LABELS_CSV"], folder)
    return RunConfig(
        data_dir=folder, dataset_url=p["DATASET_URL"] or DEFAULT_DATASET_URL,
        dataset_sha256=p["DATASET_SHA256"].lower(), run_name=p["RUN_NAME"], seed=p["SEED"],
        recipe=recipe, model_name=p["MODEL_NAME"] or recipe.model_name,
        augment=p["AUGMENT"] or recipe.augment, epochs=epochs,
        batch_size=p["BATCH_SIZE"], image_size=image_size,
        cache_size=recipe.cache_size_for(image_size),
        num_workers=(default_num_workers(trains_on_cuda(p["DEVICE"])) if p["NUM_WORKERS"] < 0
                     else p["NUM_WORKERS"]),
        limit_per_class=p["LIMIT_PER_CLASS"], device=p["DEVICE"], pretrained=pretrained,
        resume=p["RESUME"], overwrite=p["OVERWRITE"], predict_path=p["PREDICT_PATH"],
        tta=p["TTA"] or recipe.tta,
        layout=layout,
        weights_path=p["WEIGHTS_PATH"],
    )  # fmt: skip


def from_parameters(namespace: Mapping[str, Any]) -> RunConfig:
    """The run's configuration from a notebook's parameters (pass ``globals()``), with the
    ``CATSDOGS_*`` environment variables applied to values left at their default.

    The one call after every ``parameters`` cell; see the module docstring for the order.
    """
    return make_config(**read_parameters(namespace))
