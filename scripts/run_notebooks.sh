#!/usr/bin/env bash
# Set up, then run notebooks 01 to 05 with papermill. Extra arguments go to the runner,
# e.g. -f recipes/quick.yaml -p EPOCHS 3; CATSDOGS_* environment variables work too.
# The executed notebooks land in runs/<RUN_NAME>/notebooks/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m catsdogs_helpers.tools.series "$@"
