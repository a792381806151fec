#!/usr/bin/env bash
# Create .venv with Python >= 3.12, install mixvi with its test extra, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/ruff check mixvi benchmarks extras tests
.venv/bin/python -m pytest -p no:cacheprovider "$@"
