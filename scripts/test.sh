#!/usr/bin/env bash
# Set up, then check style and run every test: the helpers' unit tests and all five
# notebooks under nbval at a tiny setting (on synthetic data served on 127.0.0.1), plus an
# end-to-end run on ../shared/data/catsdogs-dev-10k.zip when that file exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest --nbval-lax --nbval-current-env "$@"
