#!/usr/bin/env bash
# Create .venv with Python >= 3.12, install mixvi with its test extra, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/ruff check mixvi benchmarks extras tests
# two worker processes: most of a test's time is XLA compiling its programs, mostly on one thread
# (2 cores: 881 s against 1378 s on one process); MIXVI_TEST_WORKERS=0 runs in this process (pdb, -x)
.venv/bin/python -m pytest -p no:cacheprovider -n "${MIXVI_TEST_WORKERS:-2}" "$@"
