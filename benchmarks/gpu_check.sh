#!/usr/bin/env bash
# On a GPU machine, from a fresh clone with the 10k subset's zip beside it: set up, then
# print one table (benchmarks/gpu_check.py says what it measures). Under 8 minutes.
#   bash benchmarks/gpu_check.sh [ZIP]      (default: ../shared/data/catsdogs-dev-10k.zip)
# PYTHON=python3 uses that Python and the torch it has instead of setting up .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ZIP=${1:-../shared/data/catsdogs-dev-10k.zip}
if [ -n "${PYTHON:-}" ]; then
  exec "$PYTHON" benchmarks/gpu_check.py --zip "$ZIP" "${@:2}"
fi
bash scripts/setup.sh
exec .venv/bin/python benchmarks/gpu_check.py --zip "$ZIP" "${@:2}"
