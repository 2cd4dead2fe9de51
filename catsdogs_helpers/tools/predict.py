"""``catsdogs-predict``: classify photos with a trained run, from a terminal.

Exit status: 0 when a photo was classified, 1 when none was, 2 for a usage error."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd
import torch

from .. import calibration, config, predicting
from ..config import TTAS
from ..devices import pick_device
from ..layouts import PHOTO_SUFFIXES
from ..plumbing import csv_text, write_text
from ..runs import RunConflict
from ..training import CheckpointError
from . import export

FORMATS = ("table", "csv", "json")


def make_parser() -> argparse.ArgumentParser:
    description = __doc__.splitlines()[0].split(": ", 1)[1]
    parser = argparse.ArgumentParser(prog="catsdogs-predict", description=description)
    add = parser.add_argument
    paths = "photos, folders or globs; every argument after -- is one (a name like -x.jpg)"
    add("paths", nargs="*", metavar="PATH", help=paths)
    add("--run", required=True, help="a run's name (in the runs folder) or path")
    rule = "a decision rule saved with the run, e.g. Cat-99 (default: the most likely class)"
    add("--decision", default="", metavar="NAME", help=rule)
    add("--tta", choices=TTAS, default="", help="test-time augmentation (default: the run's)")
    add("--device", default="auto", help="auto, cpu, cuda or mps")
    add("--format", choices=FORMATS, default="table", help="output format")
    add("--output", type=Path, help="write the predictions to this file")
    add("--batch-size", type=int, default=64, help="photos per batch")
    onnx = "use the exported ONNX file (ONNX Runtime, CPU), exporting the run first if needed"
    add("--onnx", action="store_true", help=onnx)
    overwrite = "with --onnx: replace an export made from another checkpoint or preprocessing"
    add("--overwrite", action="store_true", help=overwrite)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, PATHs anywhere (all after ``--`` too); no PATH is a usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_intermixed_args(argv[:end])
    args.paths += argv[end + 1 :]
    if not args.paths:
        parser.error("the following arguments are required: PATH (after -- for a name like -x.jpg)")
    return args


def find_run(value: str) -> Path:
    """A run folder: a run's name in the runs folder (:func:`config.runs_dir`), or a path."""
    path = Path(value).expanduser()
    try:
        named = config.run_dir(value)
    except config.ParameterError:  # not a name (a path, ".")
        named = path
    for candidate in (named, path):
        if candidate.is_dir():
            return candidate
    known = sorted(p.name for p in config.runs_dir().glob("*/best.pt"))
    raise FileNotFoundError(
        f"no run {value!r}: not a folder, nor a run in {config.runs_dir()} "
        f"(runs there: {', '.join(known) or 'none yet'})"
    )


def load(args: argparse.Namespace, device: torch.device) -> predicting.Classifier:
    """The classifier the arguments ask for: the run's best model, or its ONNX export."""
    run = find_run(args.run)
    if not args.onnx:
        return predicting.load_classifier(run, device=device, tta=args.tta, decision=args.decision)
    rule = calibration.read_decision(run, args.decision) if args.decision else None
    if (run / "best.pt").is_file():  # a run folder, not a copied export folder
        export.export_run(run, tta=args.tta, overwrite=args.overwrite)
    classifier = export.load_exported(run, runtime="onnx")
    if args.tta and args.tta != classifier.preprocessing.tta:
        raise RunConflict(
            f"the export in {run} averages tta={classifier.preprocessing.tta!r}, not "
            f"{args.tta!r}: export again from the run folder with --tta {args.tta}"
        )
    return dataclasses.replace(classifier, decision=rule) if rule else classifier


def describe(classifier: predicting.Classifier) -> str:
    """One line: the model, its test-time augmentation and how it decides."""
    d = classifier.decision
    rule = "the most likely class"
    if d.has_threshold and len(classifier.class_names) == 2:
        other = next(name for name in classifier.class_names if name != d.positive)
        rule = f"{d.positive} when p_{d.positive} >= {d.threshold:.3f}, else {other}"
        rule += f" (chosen on validation for {d.goal})" if d.goal else ""
    scaled = f"; probabilities at temperature {d.temperature:.2f}" if d.temperature != 1 else ""
    tta = classifier.preprocessing.tta
    return f"model {classifier.name}, test-time augmentation {tta}; decision: {rule}{scaled}"


def render(table: pd.DataFrame, fmt: str) -> str:
    """The predictions as text: an aligned table, CSV, or JSON records (NaN as null)."""
    if fmt == "csv":
        return csv_text(table)
    if fmt == "json":
        return table.to_json(orient="records", indent=2) + "\n"
    hidden = ["model", "note", "file"]  # the model is on standard error; path names the file
    hidden += [] if (table["error"] != "").any() else ["error"]
    shown = table.drop(columns=hidden)
    return shown.to_string(index=False, float_format="{:.3f}".format, na_rep="") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parse_arguments(parser, argv)
    try:
        device = pick_device(args.device)
    except RuntimeError as err:  # a device that is not there, or no device's name
        parser.error(str(err))
    try:
        classifier = load(args, device)
        table = predicting.predict_files(classifier, args.paths, batch_size=args.batch_size)
    except (FileNotFoundError, CheckpointError, RunConflict, ImportError, ValueError) as err:
        parser.error(str(err))
    if table.empty:
        suffixes = " ".join(sorted(PHOTO_SUFFIXES))
        print(f"no photos ({suffixes}) in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    text = render(table, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_text(args.output, text)
    classified = int((table["error"] == "").sum())
    written = f", written to {args.output}" if args.output else ""
    summary = f"{classified} of {len(table)} photos classified{written}"
    print(f"{describe(classifier)}\n{summary}", file=sys.stderr)
    return 0 if classified else 1


if __name__ == "__main__":
    sys.exit(main())
