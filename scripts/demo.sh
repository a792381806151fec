#!/usr/bin/env bash
# Create .venv with Python >= 3.12, install mixvi and run `mixvi demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/python -m pip install -q -e .
.venv/bin/mixvi demo "$@"
