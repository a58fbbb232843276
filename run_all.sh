#!/usr/bin/env bash
# Run the whole pipeline.
#   bash run_all.sh                      build the built-in sample dataset, then run every step on it
#   bash run_all.sh DATA_DIR [WORK_DIR]  run every step on a DFDC-shaped dataset
# Environment: WORKERS (processes per step, default 1), FRAME_STEP (default 10),
# FOLDS (default 5; 2 on the sample), EXTRA_ARGS (passed to every step, e.g. "--limit 10").
# Every step skips the videos it already finished, so a killed run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh

if [ $# -ge 1 ]; then
    DATA_DIR="$1"
    WORK_DIR="${2:-work/$(basename "$DATA_DIR")}"
    FOLDS="${FOLDS:-5}"
else
    DATA_DIR="data/sample"
    WORK_DIR="work/sample"
    FOLDS="${FOLDS:-2}"
    if [ ! -f "$DATA_DIR/.complete" ]; then
        rm -rf "$DATA_DIR"
        python -m preprocessing.sample_data "$DATA_DIR" --folders 2 --reals 3 --fakes 1 --orphan-fakes 1
        touch "$DATA_DIR/.complete"
    fi
fi
WORKERS="${WORKERS:-1}"
FRAME_STEP="${FRAME_STEP:-10}"
COMMON=(--data-dir "$DATA_DIR" --work-dir "$WORK_DIR" --workers "$WORKERS" ${EXTRA_ARGS:-})

python 0_detect_faces.py "${COMMON[@]}" --frame-step "$FRAME_STEP"
python 1_extract_crops.py "${COMMON[@]}"
python 2_generate_landmarks.py "${COMMON[@]}"
python 3_generate_diffs.py "${COMMON[@]}"
python 4_generate_folds.py "${COMMON[@]}" --folds "$FOLDS"
# Steps 5 (training) and 6 (prediction) are not built yet (issues #3 and #4).
echo "[run_all] artifacts in $WORK_DIR (boxes, crops, landmarks, diffs, folds.csv)"
