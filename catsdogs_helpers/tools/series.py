"""Run the whole notebook series with papermill: ``python -m catsdogs_helpers.tools.series``.

Executed notebooks go to ``runs/<run-name>/notebooks/``; parameters from ``-f FILE``, ``-p``
(which wins) or ``CATSDOGS_<NAME>``."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from .. import config

if TYPE_CHECKING:
    from traitlets.config import Config

log = logging.getLogger(__name__)


def notebook_paths(notebooks_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order."""
    folder = Path(notebooks_dir) if notebooks_dir else config.project_root() / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return paths


#: Set for the notebook kernels unless already set: text progress bars.
KERNEL_ENVIRONMENT: Mapping[str, str] = {"CATSDOGS_PROGRESS": "text"}


def kernel_manager_config() -> Config:
    """Kernel manager settings: CurveZMQ encryption where jupyter_client and pyzmq can (so
    ipykernel does not warn of TCP without encryption); else empty."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    return Config()


def engine_options() -> dict[str, Any]:
    """nbclient options for ``papermill.execute_notebook`` (a text bar stored once)."""
    return {"coalesce_streams": True, "config": kernel_manager_config()}


def kernel_variables(parameters: Mapping[str, object]) -> dict[str, str]:
    """:data:`KERNEL_ENVIRONMENT` where unset, and every parameter as ``CATSDOGS_<NAME>``."""
    added = {name: value for name, value in KERNEL_ENVIRONMENT.items() if name not in os.environ}
    return {**added, **{config.ENV_PREFIX + k: str(v) for k, v in parameters.items()}}


def read_history(path: Path) -> list[dict[str, str]] | None:
    """The rows of a ``history.csv``: ``[]`` when there is none, None when unreadable now."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def new_rows(before: list[dict[str, str]], now: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows of ``now`` that ``before`` lacks; all of them when training started afresh."""
    return now[len(before) :] if now[: len(before)] == before else now


def epoch_line(row: Mapping[str, str]) -> str:
    """One history row as ``   epoch 3: train acc 0.812, val acc 0.845, 21 s``."""
    parts = []
    for key in ("train_acc", "val_acc"):
        with contextlib.suppress(KeyError, ValueError):
            parts.append(f"{key.replace('_', ' ')} {float(row[key]):.3f}")
    with contextlib.suppress(KeyError, ValueError):
        parts.append(f"{float(row['seconds']):.0f} s")
    return f"   epoch {row.get('epoch', '?')}: {', '.join(parts)}"


@contextlib.contextmanager
def watch_history(run_folder: str | os.PathLike[str], interval: float = 2.0) -> Iterator[None]:
    """While the block runs, print a line for each epoch added to ``run_folder/history.csv``."""
    path = Path(run_folder) / "history.csv"
    seen = read_history(path) or []
    stop = threading.Event()

    def look() -> None:
        nonlocal seen
        now = read_history(path)
        if now is not None:
            for row in new_rows(seen, now):
                print(epoch_line(row), flush=True)
            seen = now

    def loop() -> None:
        while not stop.wait(interval):
            look()

    thread = threading.Thread(target=loop, name="watch-history", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        look()


def check_parameters(parameters: dict, declared: Mapping[Path, set[str]]) -> config.RunConfig:
    """The run's checked configuration before any notebook runs (``declared``: each
    notebook's parameters); raises ``ParameterError``."""
    problems = config.unknown_names(parameters)
    known = set().union(*declared.values())
    known.add("RUN_NAME")  # the runner's own: the folder of the executed notebooks
    problems += [f"{n} is a parameter of no notebook run here" for n in parameters
                 if n in config.PARAMETERS and n not in known]  # fmt: skip
    if problems:
        raise config.ParameterError("; ".join(problems))
    return config.make_config(**config.read_parameters(parameters, explicit=True))


def environment(values: Mapping[str, str]) -> contextlib.AbstractContextManager:
    """Set environment variables for a block (the kernels started in it inherit them)."""
    return mock.patch.dict(os.environ, values)


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; ``executed`` is the copy that holds its traceback."""

    def __init__(self, name: str, error: str, executed: Path) -> None:
        super().__init__(f"{name} stopped: {error}")
        self.executed = executed


def keep_earlier(out_dir: Path) -> Path | None:
    """Move an earlier series' executed notebooks into ``out_dir/earlier/<time>/``."""
    earlier = sorted(out_dir.glob("[0-9][0-9]_*.ipynb"))
    if not earlier:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(p.stat().st_mtime for p in earlier)))
    folder = out_dir / "earlier" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    for path in earlier:
        path.replace(folder / path.name)
    return folder


def summary_lines(run_dir: Path) -> list[str]:
    """What a finished series gives: the test accuracy, the run folder, the figures."""
    from ..runs import read_json

    lines = []
    metrics = read_json(run_dir / "metrics.json") or {}
    if "test_accuracy" in metrics:
        minutes = metrics.get("train_seconds", 0) / 60
        lines.append(
            f"test accuracy {metrics['test_accuracy']:.2%} on {metrics['n_test']} photos "
            f"({metrics['epochs_run']} epochs, {minutes:.1f} min of training)"
        )
    lines.append(f"run folder: {run_dir}")
    lines += [f"figure: {p}" for p in sorted((run_dir / "figures").glob("*.png"))]
    return lines


def _execute(path: Path, out: Path, parameters: dict, env: Mapping[str, str]) -> None:
    """One notebook through papermill; a failure as :class:`NotebookFailed`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with environment(env), watch_history(out.parent.parent):
        try:
            papermill.execute_notebook(
                str(path),
                str(out),
                parameters=parameters,
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                **engine_options(),
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(path.name, f"{err.ename}: {err.evalue}", out) from err


def run_series(
    parameters: dict | None = None,
    *,
    notebooks_dir: str | os.PathLike[str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Execute the notebooks in order, each with the parameters its cell holds (all of them
    also as ``CATSDOGS_*``); returns the folder of the executed copies."""
    import papermill

    parameters = dict(parameters or {})
    paths = [p for p in notebook_paths(notebooks_dir)
             if not only or any(p.name.startswith(prefix) for prefix in only)]  # fmt: skip
    declared = {path: set(papermill.inspect_notebook(str(path))) for path in paths}
    cfg = check_parameters(parameters, declared)
    out_dir = cfg.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = keep_earlier(out_dir)
    if kept:
        print(f"the executed notebooks of the series before are kept in {kept}")
    env = kernel_variables(parameters)
    for path in paths:
        start = time.perf_counter()
        print(f"== {path.name}", flush=True)
        given = {k: v for k, v in parameters.items() if k in declared[path]}
        _execute(path, out_dir / path.name, given, env)
        print(f"   done in {time.perf_counter() - start:.0f}s -> {out_dir / path.name}", flush=True)
    return out_dir


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """papermill's ``-f FILE`` and ``-p NAME VALUE`` (which wins), read by
    :func:`parameter_values`."""
    parser.add_argument(
        "-f", "--parameters-file", action="append", default=[], metavar="FILE",
        help="a YAML file of parameters, e.g. -f recipes/tutorial.yaml",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a notebook parameter, e.g. -p EPOCHS 3",
    )  # fmt: skip


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parameters of a YAML file (``-f``); a relative path not found here is looked up in
    ``recipes/``."""
    import yaml

    path = Path(path)
    if not path.is_file() and not path.is_absolute():
        path = config.project_root() / "recipes" / path
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise config.ParameterError(f"parameter file {path} cannot be read: {err}") from None
    if not isinstance(values, dict):
        raise config.ParameterError(f"{path} holds no NAME: value lines")
    return values


def parameter_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``-f`` files' values, then the ``-p`` pairs (Python literals where they parse)."""
    values: dict[str, Any] = {}
    for path in args.parameters_file:
        values.update(read_recipe(path))
    return {**values, **{name: _value(value) for name, value in args.parameter}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_parameter_options(parser)
    parser.add_argument("--only", nargs="*", help="notebook number prefixes to run, e.g. 04 05")
    parser.add_argument("--debug", action="store_true", help="a failing notebook's traceback")
    args = parser.parse_args(argv)
    try:
        out_dir = run_series(parameter_values(args), only=args.only)
    except config.ParameterError as err:
        parser.exit(2, f"error: {err}\n")
    except NotebookFailed as err:
        if args.debug:
            raise
        where = f"its traceback is in {err.executed} (or run again with --debug)"
        parser.exit(1, f"error: {err}\n{where}\n")
    print("\n".join([*summary_lines(out_dir.parent), f"executed notebooks: {out_dir}"]))


if __name__ == "__main__":
    main()
