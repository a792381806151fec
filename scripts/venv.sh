# Sourced by demo.sh and test.sh: create .venv with Python >= 3.12 ($PYTHON, else the first of
# python3.12 / python3.13 / python3 that is new enough) and upgrade its pip.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "need Python >= 3.12 (pyenv: see .python-version)"; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
