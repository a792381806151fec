#!/usr/bin/env bash
# The GPU check of the scale benchmark as one command for a session lent a device machine:
#     run(command="bash scripts/gpu_scale.sh", timeout_s=560)
# The device image already has jax with CUDA, numpyro, optax, scipy, tqdm (nothing can be installed there),
# so mixvi runs from the source tree. Writes to $OUT: gpu.txt (card, driver, versions), scale_gpu.json,
# benchmarks.md (a copy of docs/benchmarks.md with the 'scale-gpu' section filled) and scale.log.
# Back here: copy scale_gpu.json to docs/benchmarks/ and the scale-gpu section into docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/mixvi-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import jax, numpyro, optax; print('jax', jax.__version__, 'numpyro', numpyro.__version__, jax.devices())"
} 2>&1 | tee "$OUT/gpu.txt"
cp docs/benchmarks.md "$OUT/benchmarks.md"
"$PY" -m benchmarks.scale --budget "${BUDGET:-420}" --out "$OUT/scale_gpu.json" --md "$OUT/benchmarks.md" \
  --section scale-gpu "$@" 2>&1 | tee "$OUT/scale.log"
