"""Run the whole notebook series with papermill: ``python -m catsdogs_helpers.series``.

Executed notebooks are written to ``runs/<run-name>/notebooks/``. Parameters are passed as
``-p NAME VALUE`` (or as ``CATSDOGS_<NAME>`` environment variables, which the notebooks read
themselves), for example::

    python -m catsdogs_helpers.series -p RUN_NAME quick -p EPOCHS 3 -p LIMIT_PER_CLASS 1000
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import time
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


def run_series(
    parameters: dict | None = None,
    *,
    notebooks_dir: str | os.PathLike[str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Execute the notebooks in order; returns the folder of the executed copies."""
    import papermill

    parameters = dict(parameters or {})
    run_name = str(parameters.get("RUN_NAME") or config.env("RUN_NAME", "default"))
    out_dir = config.run_dir(run_name) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in notebook_paths(notebooks_dir):
        if only and not any(path.name.startswith(prefix) for prefix in only):
            continue
        start = time.perf_counter()
        print(f"== {path.name}", flush=True)
        known = papermill.inspect_notebook(str(path))
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
    out_dir = run_series(parameters, only=args.only)
    print(f"executed notebooks are in {out_dir}")


if __name__ == "__main__":
    main()
