#!/usr/bin/env bash
# Score a folder of videos with the ensemble:
#   bash predict_submission.sh TEST_DIR OUT.csv [CHECKPOINT ...]
# Without checkpoints it uses the ones listed in weights/ensemble.txt (one path per line,
# written by run_all.sh), with the temperature run_all.sh fitted for them
# (weights/calibration.json) when there is one; ENSEMBLE=selim uses selim's released seven
# (weights/selim_ensemble.txt, from bash weights/download_selim.sh); ENSEMBLE=mos scores realism
# instead (weights/ensemble_mos.txt, writing filename,mos; MOS_WEIGHTS: its member weights, VRA's
# "0.75 0.25" for mos_convnext + mos_eva). Environment: STRATEGY
# (confident|ntech|mean), FRAMES (32), CALIBRATION (a temperature JSON; "none": none),
# WEIGHTS_DIR (weights), EXPLAIN_DIR (also write an explanation page per video there),
# EXTRA_ARGS (passed to 6_predict.py).
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
    WEIGHTS_DIR="${WEIGHTS_DIR:-weights}"
    if [ "${ENSEMBLE:-}" = "selim" ]; then  # selim's released seven (bash weights/download_selim.sh)
        LIST="$WEIGHTS_DIR/selim_ensemble.txt"
        [ -s "$LIST" ] || { echo "error: $LIST is missing: run bash weights/download_selim.sh (online)" >&2; exit 1; }
    elif [ "${ENSEMBLE:-}" = "mos" ]; then  # realism (MOS) models trained by run_all.sh
        LIST="$WEIGHTS_DIR/ensemble_mos.txt"
        [ -s "$LIST" ] || { echo "error: $LIST is missing: train realism models first (bash run_all.sh on data with MOS ratings)" >&2; exit 1; }
    else
        LIST="$WEIGHTS_DIR/ensemble.txt"
        [ -s "$LIST" ] || { echo "error: no checkpoints given and $LIST is missing: train first (bash run_all.sh)" >&2; exit 1; }
        # the temperature run_all.sh fitted for this ensemble
        if [ -z "${CALIBRATION:-}" ] && [ -f "$WEIGHTS_DIR/calibration.json" ]; then CALIBRATION="$WEIGHTS_DIR/calibration.json"; fi
    fi
    mapfile -t MODELS < <(grep -v '^\s*#' "$LIST" | grep -v '^\s*$')
fi
ARGS=(--test-dir "$TEST_DIR" --output "$OUT" --models "${MODELS[@]}" --strategy "${STRATEGY:-confident}" --frames "${FRAMES:-32}")
if [ -n "${MOS_WEIGHTS:-}" ]; then read -r -a weights <<< "$MOS_WEIGHTS"; ARGS+=(--weights "${weights[@]}"); fi
if [ -n "${CALIBRATION:-}" ] && [ "$CALIBRATION" != "none" ]; then ARGS+=(--calibration "$CALIBRATION"); fi
[ -n "${EXPLAIN_DIR:-}" ] && ARGS+=(--explain "$EXPLAIN_DIR")
python 6_predict.py "${ARGS[@]}" ${EXTRA_ARGS:-}
