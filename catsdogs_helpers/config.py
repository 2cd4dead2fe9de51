"""Configuration: where things live, what each run is called, and the checked run settings.

Every path comes from here: the repository root (found from this file, not from the current
folder) or a ``CATSDOGS_*`` environment variable. Notebooks read their parameters from the
environment with the same names, so ``CATSDOGS_EPOCHS=3 jupyter lab`` and
``papermill -p EPOCHS 3`` do the same thing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
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
DEVICES = ("auto", "cpu", "cuda", "mps")


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
        raise ValueError(
            f"RUN_NAME {run_name!r} is not a usable folder name: use letters, digits, '-' or '_'."
        )
    return runs_dir() / run_name


def env(name: str, default: Any) -> Any:
    """Read ``CATSDOGS_<NAME>`` from the environment, typed like ``default``."""
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: everything the ``RECIPE`` parameter switches at once."""

    name: str
    model_name: str
    image_size: int  # the crop the model sees in training
    cache_size: int  # square side of the decoded uint8 cache; evaluation uses its centre
    epochs: int
    batch_size: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    weight_decay: float
    schedule: str  # "onecycle" or "plateau"
    label_smoothing: float
    augment: str  # "light" (crop + flip) or "tutorial" (affine, crop, colour)
    early_stopping: int  # epochs without improvement before stopping (0 = never)
    tta: bool  # average predictions over the image and its mirror
    progressive: bool  # train on smaller images first (2/3 of image_size), growing to full


RECIPE_DEFAULTS: dict[str, Recipe] = {
    # Ours: a small network trained well. ResNet-9 on a decoded-once cache, bf16 +
    # channels_last, one-cycle SGD, label smoothing, crop + flip, progressive resizing
    # (64 -> 96 px), and flip averaging at test time.
    "fast": Recipe(
        name="fast",
        model_name="resnet9",
        image_size=96,
        cache_size=110,
        epochs=22,
        batch_size=128,
        optimizer="sgd",
        lr=0.2,
        weight_decay=5e-4,
        schedule="onecycle",
        label_smoothing=0.1,
        augment="light",
        early_stopping=0,
        tta=True,
        progressive=True,
    ),
    # The tutorial's recipe, its defects fixed: ResNet-50 from scratch, 128 px crops of 160 px
    # images, Adam 1e-3, reduce-on-plateau (0.5, patience 3), early stopping (5), 10 epochs.
    "tutorial": Recipe(
        name="tutorial",
        model_name="resnet50",
        image_size=128,
        cache_size=160,
        epochs=10,
        batch_size=64,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        schedule="plateau",
        label_smoothing=0.0,
        augment="tutorial",
        early_stopping=5,
        tta=False,
        progressive=False,
    ),
}


@dataclass(frozen=True)
class RunConfig:
    """The checked settings of one run, built by :func:`make_config` from notebook parameters."""

    data_dir: Path
    dataset_url: str
    dataset_sha256: str
    run_name: str
    seed: int
    recipe: Recipe
    epochs: int
    batch_size: int
    image_size: int
    cache_size: int
    model_name: str
    num_workers: int
    limit_per_class: int
    device: str
    pretrained: bool
    resume: bool
    overwrite: bool

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run_name)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``metrics.json`` and checkpoints."""
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["recipe"] = self.recipe.name
        return out


def available_cores() -> int:
    """CPU cores this process may run on (fewer than the machine has when it is confined)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_num_workers() -> int:
    """Loader workers that pay off here: 0 on one or two cores, else up to 4."""
    cores = available_cores()
    return 0 if cores <= 2 else min(4, cores - 1)


def make_config(
    *,
    DATA_DIR: str = "",
    DATASET_URL: str = "",
    DATASET_SHA256: str = "",
    RUN_NAME: str = "default",
    SEED: int = 42,
    RECIPE: str = "fast",
    MODEL_NAME: str = "",
    EPOCHS: int = 0,
    BATCH_SIZE: int = 0,
    IMAGE_SIZE: int = 0,
    NUM_WORKERS: int = -1,
    LIMIT_PER_CLASS: int = 0,
    DEVICE: str = "auto",
    PRETRAINED: bool = False,
    RESUME: bool = False,
    OVERWRITE: bool = False,
) -> RunConfig:
    """Check the notebook parameters and fill the blanks (0 or "") from the recipe.

    Raises ``ValueError`` with a message that says which parameter to change.
    """
    if RECIPE not in RECIPE_DEFAULTS:
        raise ValueError(f"RECIPE={RECIPE!r} is unknown: use one of {', '.join(RECIPES)}.")
    recipe = RECIPE_DEFAULTS[RECIPE]
    model_name = MODEL_NAME or recipe.model_name
    if model_name not in MODEL_NAMES:
        raise ValueError(
            f"MODEL_NAME={model_name!r} is unknown: use one of {', '.join(MODEL_NAMES)}."
        )
    epochs = EPOCHS or recipe.epochs
    if int(EPOCHS) < 0 or epochs < 1:
        raise ValueError(f"EPOCHS={EPOCHS} must be at least 1 (0 means the recipe's default).")
    batch_size = BATCH_SIZE or recipe.batch_size
    if batch_size < 1:
        raise ValueError(f"BATCH_SIZE={BATCH_SIZE} must be at least 1.")
    image_size = IMAGE_SIZE or recipe.image_size
    if image_size < 32:
        raise ValueError(f"IMAGE_SIZE={IMAGE_SIZE} is too small: use 32 or more (0 = recipe).")
    # Keep the recipe's margin between cache and crop (160 -> 128, 110 -> 96).
    cache_size = max(image_size, round(image_size * recipe.cache_size / recipe.image_size))
    if LIMIT_PER_CLASS < 0:
        raise ValueError(f"LIMIT_PER_CLASS={LIMIT_PER_CLASS} must be 0 (all) or more.")
    if DEVICE not in DEVICES:
        raise ValueError(f"DEVICE={DEVICE!r} is unknown: use one of {', '.join(DEVICES)}.")
    num_workers = default_num_workers() if NUM_WORKERS < 0 else NUM_WORKERS
    run_dir(RUN_NAME)  # checks the name
    return RunConfig(
        data_dir=data_dir(DATA_DIR),
        dataset_url=DATASET_URL or DEFAULT_DATASET_URL,
        dataset_sha256=DATASET_SHA256.lower(),
        run_name=RUN_NAME,
        seed=int(SEED),
        recipe=recipe,
        epochs=int(epochs),
        batch_size=int(batch_size),
        image_size=int(image_size),
        cache_size=int(cache_size),
        model_name=model_name,
        num_workers=int(num_workers),
        limit_per_class=int(LIMIT_PER_CLASS),
        device=DEVICE,
        pretrained=bool(PRETRAINED),
        resume=bool(RESUME),
        overwrite=bool(OVERWRITE),
    )
