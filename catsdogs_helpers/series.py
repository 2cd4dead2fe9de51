"""Run the whole notebook series with papermill: ``python -m catsdogs_helpers.series``.

Executed notebooks are written to ``runs/<run-name>/notebooks/``. Parameters are passed as
``-p NAME VALUE`` (or as ``CATSDOGS_<NAME>`` environment variables, which the notebooks read
themselves), for example::

    python -m catsdogs_helpers.series -p RUN_NAME quick -p EPOCHS 3 -p LIMIT_PER_CLASS 1000
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from . import config

log = logging.getLogger(__name__)


def notebook_paths(notebooks_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order."""
    folder = Path(notebooks_dir) if notebooks_dir else config.project_root() / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return paths


def check_parameters(parameters: dict, paths: list[Path]) -> config.RunConfig:
    """The run's checked configuration from ``-p`` values (which win) and ``CATSDOGS_*``
    variables, before any notebook runs: a wrong name, type or value raises
    :class:`config.ParameterError` naming it, instead of failing in notebook 04 after 01-03.
    """
    import papermill

    problems = config.unknown_names(parameters)
    known = set().union(*(papermill.inspect_notebook(str(p)) for p in paths))
    problems += [f"{n} is a parameter of no notebook run here" for n in parameters
                 if n in config.PARAMETERS and n not in known]  # fmt: skip
    if problems:
        raise config.ParameterError("; ".join(problems))
    return config.make_config(**config.read_parameters(parameters, explicit=True))


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (the kernels started in it inherit them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_series(
    parameters: dict | None = None,
    *,
    notebooks_dir: str | os.PathLike[str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Execute the notebooks in order; returns the folder of the executed copies.

    Every parameter is checked first (:func:`check_parameters`). Each notebook gets the
    ``-p`` values its ``parameters`` cell holds; all of them are also set as ``CATSDOGS_*``
    variables for the kernels, so a notebook without a parameter in its cell still sees it.
    """
    import papermill

    parameters = dict(parameters or {})
    paths = [p for p in notebook_paths(notebooks_dir)
             if not only or any(p.name.startswith(prefix) for prefix in only)]  # fmt: skip
    cfg = check_parameters(parameters, paths)
    out_dir = cfg.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {config.ENV_PREFIX + name: str(value) for name, value in parameters.items()}
    for path in paths:
        start = time.perf_counter()
        print(f"== {path.name}", flush=True)
        known = papermill.inspect_notebook(str(path))
        with environment(env):
            papermill.execute_notebook(
                str(path),
                str(out_dir / path.name),
                parameters={k: v for k, v in parameters.items() if k in known},
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
            )
        print(f"   done in {time.perf_counter() - start:.0f}s -> {out_dir / path.name}", flush=True)
    return out_dir


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a notebook parameter, e.g. -p EPOCHS 3",
    )  # fmt: skip
    parser.add_argument("--only", nargs="*", help="notebook number prefixes to run, e.g. 04 05")
    args = parser.parse_args(argv)
    parameters = {name: _value(value) for name, value in args.parameter}
    try:
        out_dir = run_series(parameters, only=args.only)
    except config.ParameterError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"executed notebooks are in {out_dir}")


if __name__ == "__main__":
    main()
