"""Exporting a run's model as TorchScript and ONNX files that take the uint8 ``(N, S, S, 3)``
batch and trace :func:`evaluation.probabilities` itself; the decision, which calibration may
change, stays in ``model.json``."""

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

from ..calibration import Decision
from ..downloading import sha256_of
from ..evaluation import probabilities
from ..plumbing import atomic_path
from ..predicting import Classifier, load_classifier
from ..runs import RunConflict, read_json, write_json
from ..transforms import Preprocessing

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "probabilities"  # the names of the graph's input and output
RUNTIMES = ("onnx", "torchscript")
_LAYOUT = "NHWC, RGB, 0-255"
_IDENTITY = ("checkpoint_sha256", "preprocessing", "class_names")  # the same model
Runtime = Callable[[np.ndarray], np.ndarray]


class ProbabilityModel(nn.Module):
    """A uint8 ``(N, S, S, 3)`` batch in, class probabilities out (:func:`probabilities`)."""

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
    onnx = property(lambda self: self.folder / "model.onnx")
    torchscript = property(lambda self: self.folder / "model.pt")
    info = property(lambda self: self.folder / "model.json")


def export_files(run_dir: str | os.PathLike[str]) -> ExportFiles:
    """The export folder of a run (it may not exist yet)."""
    return ExportFiles(Path(run_dir) / "export")


def export_info(classifier: Classifier, checkpoint: Path) -> dict[str, Any]:
    """What ``model.json`` says: how to prepare photos, what comes out, how to decide."""
    p = classifier.preprocessing
    px = p.input_size
    return {
        "model": classifier.name,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "class_names": list(classifier.class_names),
        "preprocessing": p.to_dict(),
        "steps": [
            "decode the photo upright (EXIF orientation) as RGB, transparency on white",
            f"resize (bilinear) its shorter side to {p.cache_size} px, keep the centre square",
            f"crop the centre {px} x {px} px",
            "stack photos into a batch; normalisation and test-time augmentation "
            f"({p.tta!r}) happen inside the model",
        ],
        "input": {"name": INPUT, "shape": ["N", px, px, 3], "dtype": "uint8", "layout": _LAYOUT},
        "output": {
            "name": OUTPUT,
            "shape": ["N", len(classifier.class_names)],
            "dtype": "float32",
            "meaning": "class probabilities, before the decision's temperature",
        },
        "decision": classifier.decision.to_dict(),
        "files": {"onnx": "model.onnx", "torchscript": "model.pt"},
        "torch": torch.__version__,
    }


def capture(classifier: Classifier, batch_size: int = 2) -> torch.export.ExportedProgram:
    """A copy of the model in :class:`ProbabilityModel`, captured on the CPU in float32."""
    model = copy.deepcopy(classifier.model).float().cpu()
    model = ProbabilityModel(model, classifier.preprocessing).eval()
    size = classifier.preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, size, size, 3)
    example = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes={INPUT: {0: batch}})


def save_onnx(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Write the captured graph as one ONNX file (weights inside, up to 2 GB of them)."""
    with atomic_path(path) as tmp:
        io_names = {"input_names": [INPUT], "output_names": [OUTPUT]}
        onnx = torch.onnx.export(
            program, **io_names, dynamo=True, verbose=False, external_data=False
        )
        onnx.save(str(tmp))
    return path


def save_torchscript(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Write the captured graph as TorchScript (its crops are plain slices: the batch stays
    dynamic, whatever PyTorch's warnings say)."""
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
    """Export ``best.pt`` with its preprocessing and decision; the same model reuses the files,
    another raises ``RunConflict`` unless ``overwrite``. ``model.json`` is written last."""
    run_dir = Path(run_dir)
    files = export_files(run_dir)
    classifier = load_classifier(run_dir, device="cpu", tta=tta)
    info = export_info(classifier, run_dir / "best.pt")
    before = read_json(files.info)
    same = before is not None and all(before.get(key) == info[key] for key in _IDENTITY)
    if same and files.onnx.is_file() and files.torchscript.is_file():
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


def load_exported(path: str | os.PathLike[str], *, runtime: str = "onnx") -> Classifier:
    """A :class:`Classifier` running an export (folder or its run folder) in ``runtime``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is unknown: use one of {', '.join(RUNTIMES)}")
    path = Path(path)
    files = ExportFiles(path) if (path / "model.json").is_file() else export_files(path)
    if not files.info.is_file():
        raise FileNotFoundError(
            f"no exported model in {path} (no {files.info.name}): export the run first, with "
            "export.export_run(run_dir) or `catsdogs-predict --onnx`"
        )
    info = read_json(files.info)
    file = files.onnx if runtime == "onnx" else files.torchscript
    run = onnx_runtime(file) if runtime == "onnx" else torchscript_runtime(file)
    names, cpu = tuple(info["class_names"]), torch.device("cpu")
    preprocessing = Preprocessing.from_dict(info["preprocessing"])
    decision, name = Decision.from_dict(info["decision"]), f"{info['model']} ({file.name})"
    return Classifier(None, names, preprocessing, decision, cpu, name=name, runtime=run)


def onnx_runtime(path: Path, *, threads: int = 0) -> Runtime:
    """The ONNX file in ONNX Runtime on the CPU (``threads`` per operation, 0: one per core)."""
    try:
        import onnxruntime  # optional: the "export" extra
    except ImportError as err:
        raise ImportError(
            f"running {path.name} needs onnxruntime: pip install 'catsdogs-helpers[export]'"
        ) from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT], {INPUT: np.ascontiguousarray(images)})[0]


def torchscript_runtime(path: Path) -> Runtime:
    """:func:`onnx_runtime` for the TorchScript file ``path``, on the CPU."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images))).numpy()

    return run
