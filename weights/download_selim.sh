#!/usr/bin/env bash
# selim's seven final B7 checkpoints (DFDC 1st place, release 0.0.1 of
# selimsef/dfdc_deepfake_challenge), downloaded, imported as this project's
# checkpoints and listed in weights/selim_ensemble.txt:
#   bash weights/download_selim.sh
#   ENSEMBLE=selim bash predict_submission.sh TEST_DIR OUT.csv    # his confident strategy, 32 frames
# Offline it stops at the first file with the reason; nothing half-written is left.
# Environment: SELIM_BASE_URL (a mirror), SELIM_NAMES (a subset), WEIGHTS_DIR [weights], TIMEOUT [30].
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_venv.sh
WEIGHTS_DIR="${WEIGHTS_DIR:-weights}"
BASE="${SELIM_BASE_URL:-https://github.com/selimsef/dfdc_deepfake_challenge/releases/download/0.0.1}"
NAMES=(${SELIM_NAMES:-final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36
       final_555_DeepFakeClassifier_tf_efficientnet_b7_ns_0_19
       final_777_DeepFakeClassifier_tf_efficientnet_b7_ns_0_29
       final_777_DeepFakeClassifier_tf_efficientnet_b7_ns_0_31
       final_888_DeepFakeClassifier_tf_efficientnet_b7_ns_0_37
       final_888_DeepFakeClassifier_tf_efficientnet_b7_ns_0_40
       final_999_DeepFakeClassifier_tf_efficientnet_b7_ns_0_23})
RAW="$WEIGHTS_DIR/selim/original"
python tools/download_weights.py --base-url "$BASE" --out-dir "$RAW" --timeout "${TIMEOUT:-30}" "${NAMES[@]}"
LIST=()
for name in "${NAMES[@]}"; do
    out="$WEIGHTS_DIR/selim/$name.pt"
    [ -f "$out" ] || python tools/import_weights.py "$RAW/$name" "$out" --source "$BASE/$name"
    LIST+=("$out")
done
printf '%s\n' "${LIST[@]}" > "$WEIGHTS_DIR/selim_ensemble.txt.tmp"
mv "$WEIGHTS_DIR/selim_ensemble.txt.tmp" "$WEIGHTS_DIR/selim_ensemble.txt"
echo "[download_selim] ${#LIST[@]} checkpoints listed in $WEIGHTS_DIR/selim_ensemble.txt"
