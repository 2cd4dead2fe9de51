"""Helpers for the Cats vs Dogs notebook series.

One module per step: ``config`` (paths and parameters), ``downloading``, ``validating``,
``duplicates``, ``splitting``, ``images``, ``transforms``, ``datasets``, ``models``,
``devices``, ``files``, ``locks``, ``parallel``, ``runs``, ``training``, ``evaluation``,
``plotting``, ``steps`` (the steps, reusing what exists) and ``series`` (run all notebooks
with papermill). Import what you use, e.g.
``from catsdogs_helpers import config, plotting``.
"""

__version__ = "0.1.0"
