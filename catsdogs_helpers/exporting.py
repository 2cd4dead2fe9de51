"""Exporting a run's model: TorchScript and ONNX files that take photos as the test split does.

``export_run(run_dir)`` writes, in ``runs/<RUN>/export/``:

- ``model.onnx``: for ONNX Runtime (any language, no PyTorch needed);
- ``model.pt``: TorchScript, for ``torch.jit.load`` (Python or C++, without this package);
- ``model.json``: what they expect and what they answer, for whoever calls them: the
  preprocessing (:meth:`Preprocessing.to_dict`), the input's name, shape and type, the class
  names and the run's decision (temperature, threshold), and the checkpoint they came from.

The design choice: both files take the uint8 ``(N, S, S, 3)`` RGB batch exactly as the test
loader yields it (``S`` is ``preprocessing.input_size``) and return the class probabilities,
averaged over the test-time augmentation. Normalisation and the TTA views happen *inside*
the exported graph, traced from :func:`evaluation.probabilities` itself, so there is one
implementation and a user of the ONNX file only decodes a photo and resizes it
(:meth:`Preprocessing.read` does exactly that). The decision (temperature and threshold) is
not in the graph: it is a few lines of NumPy that can change after export (calibration), so
it lives in ``model.json`` and :meth:`calibration.Decision.decide` applies it.

Both files are made from one capture: :func:`torch.export.export` traces the model once with
a dynamic batch size; ONNX (``torch.onnx.export``'s default, ``dynamo=True``, which needs
``onnxscript``) and TorchScript (``torch.jit.trace`` of the captured graph, where the crops
are already plain slices) are both written from it, so they run the same graph. TorchScript
is deprecated in recent PyTorch in favour of ``torch.export``, but it remains the format that
libtorch (C++) and older runtimes load without Python, so it is still written.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibration import Decision
from .downloading import sha256_of
from .evaluation import probabilities
from .files import atomic_path
from .predicting import Classifier, load_classifier
from .runs import RunConflict, read_json, write_json
from .transforms import Preprocessing

log = logging.getLogger(__name__)

#: The names of the exported graph's input and output.
INPUT, OUTPUT = "images", "probabilities"
RUNTIMES = ("onnx", "torchscript")


class ProbabilityModel(nn.Module):
    """A uint8 ``(N, S, S, 3)`` batch in, class probabilities out: the model wrapped in
    :func:`evaluation.probabilities` (normalisation, test-time augmentation), so that the
    exported graph needs nothing but the decoded, resized photos."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return probabilities(self.model, images, images.device, self.preprocessing)


@dataclass(frozen=True)
class ExportFiles:
    """Where a run's export lives (``runs/<RUN>/export/``)."""

    folder: Path

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def torchscript(self) -> Path:
        return self.folder / "model.pt"

    @property
    def info(self) -> Path:
        return self.folder / "model.json"


def export_files(run_dir: str | os.PathLike[str]) -> ExportFiles:
    """The export folder of a run (it may not exist yet)."""
    return ExportFiles(Path(run_dir) / "export")


def export_info(classifier: Classifier, checkpoint: Path) -> dict[str, Any]:
    """What ``model.json`` says: how to prepare photos, what comes out, how to decide."""
    p = classifier.preprocessing
    decision = classifier.decision.to_dict()
    return {
        "model": classifier.name,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "class_names": list(classifier.class_names),
        "preprocessing": p.to_dict(),
        "steps": [
            "decode the photo upright (EXIF orientation) as RGB, transparency on white",
            f"resize (bilinear) its shorter side to {p.cache_size} px, keep the centre square",
            f"crop the centre {p.input_size} x {p.input_size} px",
            "stack photos into a batch; normalisation and test-time augmentation "
            f"({p.tta!r}) happen inside the model",
        ],
        "input": {
            "name": INPUT,
            "shape": ["N", p.input_size, p.input_size, 3],
            "dtype": "uint8",
            "layout": "NHWC, RGB, 0-255",
        },
        "output": {
            "name": OUTPUT,
            "shape": ["N", len(classifier.class_names)],
            "dtype": "float32",
            "meaning": "class probabilities, before the decision's temperature",
        },
        "decision": decision,
        "files": {"onnx": "model.onnx", "torchscript": "model.pt"},
        "torch": torch.__version__,
    }


def capture(classifier: Classifier, batch_size: int = 2) -> torch.export.ExportedProgram:
    """The classifier's :class:`ProbabilityModel` captured by :func:`torch.export.export`,
    on the CPU in float32, with a dynamic batch size (traced with ``batch_size`` images).
    The caller's model is left as it is (a copy is moved to the CPU)."""
    model = copy.deepcopy(classifier.model).float().cpu()
    model = ProbabilityModel(model, classifier.preprocessing).eval()
    example = (_example(classifier.preprocessing, batch_size),)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        return torch.export.export(model, example, dynamic_shapes={INPUT: {0: batch}})


def _example(preprocessing: Preprocessing, batch_size: int) -> torch.Tensor:
    size = preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8,
                         generator=generator)  # fmt: skip


def save_onnx(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Write the captured graph as one ONNX file (weights inside, dynamic batch size)."""
    with atomic_path(path) as tmp:
        onnx_program = torch.onnx.export(
            program, input_names=[INPUT], output_names=[OUTPUT], dynamo=True, verbose=False,
            external_data=False,  # one file; an ONNX file holds up to 2 GB of weights
        )  # fmt: skip
        onnx_program.save(str(tmp))
    return path


def save_torchscript(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Write the captured graph as TorchScript, traced with a batch of the exported size.

    The capture has already turned the crops into plain slices and checked the batch size,
    so the trace keeps the batch dynamic; PyTorch's warnings that TorchScript is deprecated
    and about the traced shape check are about that and are silenced here.
    """
    module = program.module()
    example = program.example_inputs[0][0]
    with warnings.catch_warnings(), torch.no_grad(), atomic_path(path) as tmp:
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.jit.save(torch.jit.trace(module, example), str(tmp))
    return path


def export_run(
    run_dir: str | os.PathLike[str], *, tta: str = "", overwrite: bool = False
) -> ExportFiles:
    """Export the run's best model (``best.pt``) with its preprocessing and decision to
    ``runs/<RUN>/export/`` (``tta`` replaces the run's test-time augmentation; "" keeps it).

    Exporting the same checkpoint with the same preprocessing again reuses the files (only
    ``model.json`` is rewritten when, say, the decision changed since). An export made from
    another checkpoint or preprocessing raises :class:`~catsdogs_helpers.runs.RunConflict`
    unless ``overwrite``. ``model.json`` is written last: a folder without it holds no
    finished export, and is replaced.
    """
    run_dir = Path(run_dir)
    files = export_files(run_dir)
    classifier = load_classifier(run_dir, device="cpu", tta=tta)
    info = export_info(classifier, run_dir / "best.pt")
    before = read_json(files.info)
    same = before is not None and _same_model(before, info)
    if same and _complete(files):
        if before != info:
            write_json(files.info, info)
        log.info("%s already holds this model's export", files.folder)
        return files
    if before is not None and not same and not overwrite:
        raise RunConflict(
            f"{files.folder} holds an export of another model (checkpoint sha256 "
            f"{before['checkpoint_sha256'][:12]}, preprocessing {before['preprocessing']}; "
            f"now {info['checkpoint_sha256'][:12]}, {info['preprocessing']}). Use "
            "overwrite=True (catsdogs-predict --overwrite) to replace it."
        )
    files.info.unlink(missing_ok=True)
    program = capture(classifier)
    save_onnx(program, files.onnx)
    save_torchscript(program, files.torchscript)
    write_json(files.info, info)
    log.info("exported %s to %s", classifier.name, files.folder)
    return files


def _same_model(before: dict, now: dict) -> bool:
    keys = ("checkpoint_sha256", "preprocessing", "class_names")
    return all(before.get(key) == now[key] for key in keys)


def _complete(files: ExportFiles) -> bool:
    return files.onnx.is_file() and files.torchscript.is_file()


def find_export(path: str | os.PathLike[str]) -> ExportFiles:
    """The export in ``path``: an export folder (with ``model.json``) or a run folder."""
    path = Path(path)
    files = ExportFiles(path) if (path / "model.json").is_file() else export_files(path)
    if not files.info.is_file():
        raise FileNotFoundError(
            f"no exported model in {path} (no {files.info.name}): export the run first, with "
            "exporting.export_run(run_dir) or `catsdogs-predict --onnx`"
        )
    return files


def load_exported(path: str | os.PathLike[str], *, runtime: str = "onnx") -> Classifier:
    """A :class:`Classifier` that runs an exported file (``runtime``: ``onnx`` with ONNX
    Runtime on the CPU, or ``torchscript``) with the preprocessing and decision saved beside
    it; ``path`` is the export folder or its run folder. Use it with
    :func:`predicting.predict_files` like any classifier."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is unknown: use one of {', '.join(RUNTIMES)}")
    files = find_export(path)
    info = read_json(files.info)
    file = files.onnx if runtime == "onnx" else files.torchscript
    run = onnx_runtime(file) if runtime == "onnx" else torchscript_runtime(file)
    return Classifier(
        model=None, class_names=tuple(info["class_names"]),
        preprocessing=Preprocessing.from_dict(info["preprocessing"]),
        decision=Decision.from_dict(info["decision"]), device=torch.device("cpu"),
        name=f"{info['model']} ({file.name})", runtime=run,
    )  # fmt: skip


def onnx_runtime(path: Path, *, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function that runs the ONNX file ``path`` in ONNX Runtime on the CPU: a uint8
    ``(N, S, S, 3)`` array in, probabilities out. ``threads``: ONNX Runtime's threads per
    operation (0: its default, one per physical core)."""
    try:
        import onnxruntime  # optional: the "export" extra
    except ImportError as err:
        raise ImportError(
            f"running {path.name} needs onnxruntime: pip install 'catsdogs-helpers[export]'"
        ) from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT], {INPUT: np.ascontiguousarray(images)})[0]

    return run


def torchscript_runtime(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`onnx_runtime` for the TorchScript file ``path``, on the CPU."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images))).numpy()

    return run
