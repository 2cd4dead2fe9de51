"""The command-line trainer: ``python -m catsdogs_helpers.tools.trainer -f RECIPE -p NAME VALUE``.

Notebook 04's :func:`workflow.train_run` with the notebooks' parameters; under ``torchrun``
each process trains its share of every batch (``BATCH_SIZE`` stays the global batch)."""

from __future__ import annotations

import argparse
import logging

from .. import config, runs, workflow
from . import distributed, series


def read_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> config.RunConfig:
    """The run's checked configuration from ``-f``/``-p``; a wrong one exits with status 2."""
    args = parser.parse_args(argv)
    try:
        parameters = series.parameter_values(args)
        problems = config.unknown_names(parameters)
        if problems:
            raise config.ParameterError("; ".join(problems))
        return config.make_config(**config.read_parameters(parameters, explicit=True))
    except config.ParameterError as err:
        parser.exit(2, f"error: {err}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    series.add_parameter_options(parser)
    cfg = read_config(parser, argv)
    with distributed.process_group():
        main_process = distributed.is_main()
        workflow.setup_logging(logging.INFO if main_process else logging.WARNING)
        try:
            _, history = workflow.train_run(cfg, progress=main_process)
        except runs.RunConflict as err:
            parser.exit(1, f"error: {err}\n")
        if main_process:
            best = history["val_acc"].max() if len(history) else float("nan")
            print(f"{cfg.run_dir}: {len(history)} epochs on {distributed.world_size()} "
                  f"process(es), best validation accuracy {best:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
