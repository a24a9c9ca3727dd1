#!/usr/bin/env bash
# The one command a session runs on a lent GPU machine (H100/H200, CUDA 13 driver, no network):
#   OUT=/path/to/results bash scripts/device_check.sh [--dry-run]
# Installs the wheels carried in .whl/ (optuna, platformdirs, ...; fetched beforehand by
# shared/device/fetch-wheels.sh) into /tmp/tessera-site without touching the system packages,
# then runs the stages of scripts/device_check.py, each with its own time budget (a stage that
# fails or overruns is recorded, the next one runs). Writes under $OUT: device_report.json,
# device_report.md, measured_records.jsonl (for `python -m autotune.calibrate`), gpu_tests.txt,
# stages.log. --dry-run runs only what needs no GPU (toolchain, compiles, model predictions and
# the report skeleton) and is what CI runs to keep this script alive.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/device_check_out}"
PYTHON="${PYTHON:-python3}"
SITE=/tmp/tessera-site
mkdir -p "$OUT"
# cuobjdump/nvdisasm for the SASS counts: the toolkit's, where no wheel provides them.
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || echo "[device_check] wheel install failed; see $OUT/pip.log"
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" scripts/device_check.py --out "$OUT" "$@"
