#!/usr/bin/env bash
# Score a folder of videos with the ensemble:
#   bash predict_submission.sh TEST_DIR OUT.csv [CHECKPOINT ...]
# Without checkpoints it uses the ones listed in weights/ensemble.txt (one path per line,
# written by run_all.sh), with the temperature run_all.sh fitted for them
# (weights/calibration.json) when there is one. Environment: STRATEGY (confident|ntech|mean),
# FRAMES (32), CALIBRATION (a temperature JSON; "none": none), EXTRA_ARGS (passed to 6_predict.py).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 2 ]; then
    echo "usage: bash predict_submission.sh TEST_DIR OUT.csv [CHECKPOINT ...]" >&2
    exit 2
fi
TEST_DIR="$1"; OUT="$2"; shift 2
source scripts/ensure_venv.sh
if [ $# -gt 0 ]; then
    MODELS=("$@")
else
    if [ ! -s weights/ensemble.txt ]; then
        echo "error: no checkpoints given and weights/ensemble.txt is missing: train first (bash run_all.sh)" >&2
        exit 1
    fi
    mapfile -t MODELS < <(grep -v '^\s*#' weights/ensemble.txt | grep -v '^\s*$')
    if [ -z "${CALIBRATION:-}" ] && [ -f weights/calibration.json ]; then CALIBRATION=weights/calibration.json; fi
fi
ARGS=(--test-dir "$TEST_DIR" --output "$OUT" --models "${MODELS[@]}" --strategy "${STRATEGY:-confident}" --frames "${FRAMES:-32}")
if [ -n "${CALIBRATION:-}" ] && [ "$CALIBRATION" != "none" ]; then ARGS+=(--calibration "$CALIBRATION"); fi
python 6_predict.py "${ARGS[@]}" ${EXTRA_ARGS:-}
