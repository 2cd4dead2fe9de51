"""The command-line trainer: ``python -m catsdogs_helpers.tools.trainer -f RECIPE -p NAME VALUE``.

It does what notebook 04 does in one call (:func:`workflow.train_run`: data, split, cache,
:func:`training.fit`), with the notebooks' parameters, checked the same way (``-f`` files,
then ``-p`` values, win over ``CATSDOGS_*`` variables)::

    python -m catsdogs_helpers.tools.trainer -f recipes/quick.yaml -p RUN_NAME quick

Started by ``torchrun``, each process trains its share of every batch (DistributedDataParallel,
see :mod:`catsdogs_helpers.tools.distributed`); ``BATCH_SIZE`` stays the global batch::

    torchrun --nproc_per_node=8 -m catsdogs_helpers.tools.trainer -p RUN_NAME ddp -p BATCH_SIZE 1024

Notebook 05 then evaluates the run like any other (same ``RUN_NAME``).
"""

from __future__ import annotations

import argparse
import logging

from .. import config, runs, workflow
from . import distributed, series


def read_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> config.RunConfig:
    """The run's checked configuration from ``-p`` values; a wrong name, type or value ends
    the command with a message naming it (exit status 2)."""
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
