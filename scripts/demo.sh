#!/usr/bin/env bash
# Create .venv with Python >= 3.12, install mixvi and run `mixvi demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/python -m pip install -q -e .
# the figure goes to build/ (ignored by git), so the clone stays clean; `mixvi demo --out PATH` to choose
.venv/bin/mixvi demo --out build/demo.png "$@"
