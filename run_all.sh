#!/usr/bin/env bash
# Run the whole pipeline: preprocessing (steps 0-4), training (5), prediction (6), evaluation.
#
#   bash run_all.sh                      built-in sample: generate a train set and a held-out set (each
#                                        FAKE rated with a MOS), run steps 0-6 with the CPU configs and
#                                        the realism model, evaluate both on the held-out set
#   bash run_all.sh DATA_DIR [DATA_DIR ...]  the full recipe on DFDC-shaped datasets (several: trained as one,
#                                        through WORK_DIR/data_links/NAME -> DATA_DIR links, no copy); set
#                                        TEST_DIR to also predict (and, with metadata.json, evaluate) a test folder
#   bash run_all.sh DATA_DIR WORK_DIR    (when WORK_DIR holds no metadata.json) the same as WORK_DIR=... below
#
# Environment (defaults in brackets):
#   CONFIGS    configs to train, in order [GPU: selim's b7, NTech's three, deit_distill; CPU: lite0_cpu,
#              and lite0_seq3d_cpu and deit_distill_cpu on the built-in sample];
#              a *distill* config learns from TEACHER_CONFIG's checkpoint of the same fold [the first config]
#              add mds_cpu, mds_sync_cpu or mds_motion_cpu (CPU) or mds (GPU) for the audio-visual dissonance model: step 1 then also
#              extracts sound and face tracks (--av, AV_SIZE [96; 224 with mds])
#   FOLDS      validation folds to train, or "all": every fold trains, none validates (no calibration;
#              the dissonance configs need a validation fold, the MOS configs keep fold 0) ["0"]
#   SEEDS      seeds of every config [GPU: b7 gets selim's "111 555 777 888 999", NTech's re / seq / large crop
#              their 10 / 20 / 30, the others "0"; CPU: "0"]
#   MOS_CONFIGS  realism (MOS) configs, trained when folds.csv has a mos column (metadata "mos" keys)
#              [GPU: VRA's "mos_convnext mos_eva"; CPU: "mos_cpu"; "" = none]; their ensemble goes to
#              WEIGHTS_DIR/ensemble_mos.txt    MOS_WEIGHTS  its member weights [GPU: VRA's "0.75 0.25"]
#   PLAN_ONLY=1  print the training plan (config fold seed checkpoint) and stop
#   CALIBRATE  1: fit a temperature on the validation fold's videos (one fold only) [1]
#   CALIBRATE_MIN_T  the temperature's lower bound, 0.05-20 [1: it may soften the scores, never sharpen
#              them; 0.05: the free fit]
#   EXPLAIN    1: an explanation page per TEST_DIR video (6_predict --explain), linked from the
#              evaluation report [1 on the sample, else 0]
#   NUM_GPUS   GPUs per node for torchrun [all visible; 0 = no GPU]
#   NUM_FOLDS  folds in folds.csv [5; 2 on the sample]   CLIP_LEN  frames per crop clip [13 GPU, 4 CPU]
#   WORKERS    processes per preprocessing step [1]      FRAME_STEP  [10]
#   WEIGHTS_DIR [weights]   WORK_DIR [work/NAME, NAME the DATA_DIRs' folder names joined by +]
#   DATA_ROOT, WORK_ROOT: where the sample run writes [data, work]
#   EXTRA_ARGS (every preprocessing step), TRAIN_ARGS (5_train.py), PREDICT_ARGS (6_predict.py)
# Every step skips what it already finished, so a killed run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh

if [ -z "${NUM_GPUS:-}" ]; then
    NUM_GPUS="$(python -c 'import torch; print(torch.cuda.device_count())')"
fi
if [ "$NUM_GPUS" -gt 0 ]; then
    DEFAULT_CONFIGS="b7 b7_ntech_large_crop b7_ntech_re b7_ntech_seq deit_distill"
    DEFAULT_CLIP_LEN=13  # NTech's 7 frames 1/15 s apart span 13 frames of a 30-fps video
    DEFAULT_MOS_CONFIGS="mos_convnext mos_eva"; DEFAULT_MOS_WEIGHTS="0.75 0.25"  # VRA's ensemble
else
    if [ $# -ge 1 ]; then  # measured left one method out on train-videos (README): neither the
        # distilled DeiT-tiny nor the sequence model adds to lite0_cpu (three runs of lite0_seq3d_cpu:
        # 0.73, 0.63, 0.46; ensembles with it 0.74, 0.70, 0.61 against lite0_cpu's 0.71 and 0.69)
        DEFAULT_CONFIGS="lite0_cpu"
    else  # the built-in sample shows all three families
        DEFAULT_CONFIGS="lite0_cpu lite0_seq3d_cpu deit_distill_cpu"
    fi
    DEFAULT_CLIP_LEN=4   # lite0_seq3d_cpu and mos_cpu: 4 consecutive frames
    DEFAULT_MOS_CONFIGS="mos_cpu"; DEFAULT_MOS_WEIGHTS=""
fi
MOS_CONFIGS="${MOS_CONFIGS-$DEFAULT_MOS_CONFIGS}"
MOS_WEIGHTS="${MOS_WEIGHTS-$DEFAULT_MOS_WEIGHTS}"
CONFIGS="${CONFIGS:-$DEFAULT_CONFIGS}"
TEACHER_CONFIG="${TEACHER_CONFIG:-${CONFIGS%% *}}"
FOLDS="${FOLDS:-0}"
for fold in $FOLDS; do
    if ! [[ "$fold" =~ ^([0-9]+|all)$ ]]; then
        echo "run_all.sh: FOLDS holds fold numbers or 'all', got '$fold'" >&2; exit 1
    fi
    if [ "$fold" = "all" ]; then
        for config in $CONFIGS; do
            if [[ "$config" == mds* ]]; then
                echo "run_all.sh: FOLDS=all trains with no validation fold, and $config (dissonance) fits its" \
                     "MDS -> P(FAKE) calibration on one: use a fold number" >&2; exit 1
            fi
        done
    fi
done
WORKERS="${WORKERS:-1}"
FRAME_STEP="${FRAME_STEP:-10}"
CLIP_LEN="${CLIP_LEN:-$DEFAULT_CLIP_LEN}"
WEIGHTS_DIR="${WEIGHTS_DIR:-weights}"

seeds_for() {  # the originals' seeds on a GPU: selim's b7 with 111 555 777 888 999 on fold 0, all in the
    # ensemble; NTech's SEED constant in each train_b7_ns_*_100k.py (re 10, seq 20, large crop 30)
    if [ -n "${SEEDS:-}" ]; then echo "$SEEDS"; return; fi
    if [ "$NUM_GPUS" -gt 0 ]; then
        case "$1" in
            b7) echo "111 555 777 888 999"; return ;;
            b7_ntech_re) echo "10"; return ;;
            b7_ntech_seq) echo "20"; return ;;
            b7_ntech_large_crop) echo "30"; return ;;
        esac
    fi
    echo "0"
}
name_for() {  # config seed -> checkpoint name
    if [ "$2" = "0" ]; then echo "$1"; else echo "${1}_s${2}"; fi
}
PLAN=()  # "config fold seed name", in training order
for config in $CONFIGS; do
    for fold in $FOLDS; do
        for seed in $(seeds_for "$config"); do
            PLAN+=("$config $fold $seed $(name_for "$config" "$seed")")
        done
    done
done

is_dataset() {  # a folder with a metadata.json somewhere under it (links followed)
    [ -d "$1" ] && find -L "$1" -name metadata.json -print -quit 2>/dev/null | grep -q .
}
SAMPLE=0
if [ $# -ge 1 ]; then
    DATA_DIRS=("$@")
    if [ $# -eq 2 ] && ! is_dataset "$2"; then  # the old form: DATA_DIR WORK_DIR
        WORK_DIR="$2"; DATA_DIRS=("$1")
    fi
    names=()
    for d in "${DATA_DIRS[@]}"; do names+=("$(basename "$(realpath -m "$d")")"); done
    joined="$(IFS=+; echo "${names[*]}")"
    WORK_DIR="${WORK_DIR:-work/$joined}"
    if [ ${#DATA_DIRS[@]} -eq 1 ]; then
        DATA_DIR="${DATA_DIRS[0]}"
    else  # several datasets: one folder of links to them (no copy); video ids become NAME/...
        DATA_DIR="$WORK_DIR/data_links"
    fi
    if [ "${PLAN_ONLY:-0}" = "1" ]; then
        echo "[run_all] DATA_DIR=$DATA_DIR WORK_DIR=$WORK_DIR" >&2
        printf '%s\n' "${PLAN[@]}"
        exit 0
    fi
    for d in "${DATA_DIRS[@]}"; do
        [ -d "$d" ] || { echo "run_all.sh: DATA_DIR $d does not exist" >&2; exit 1; }
    done
    if [ ${#DATA_DIRS[@]} -gt 1 ]; then
        if [ "$(printf '%s\n' "${names[@]}" | sort | uniq -d)" ]; then
            echo "run_all.sh: the DATA_DIRs must have different folder names (${names[*]})" >&2; exit 1
        fi
        mkdir -p "$DATA_DIR"
        for i in "${!DATA_DIRS[@]}"; do
            ln -sfn "$(realpath "${DATA_DIRS[$i]}")" "$DATA_DIR/${names[$i]}"
        done
    fi
    NUM_FOLDS="${NUM_FOLDS:-5}"
else
    if [ "${PLAN_ONLY:-0}" = "1" ]; then printf '%s\n' "${PLAN[@]}"; exit 0; fi
    SAMPLE=1
    DATA_DIR="${DATA_ROOT:-data}/sample"
    TEST_DIR="${DATA_ROOT:-data}/sample_heldout"
    WORK_DIR="${WORK_ROOT:-work}/sample"
    NUM_FOLDS="${NUM_FOLDS:-2}"
    # --mos: every FAKE's swap artefacts get a random strength, and its metadata a MOS that falls with it;
    # with a dissonance config, the clips also speak (--audio: the voice drives the mouth) and some
    # FAKEs have the wrong sound (--av-fakes), or the dissonance model would have nothing to learn from
    KIND=mos
    SAMPLE_AV=()
    case " $CONFIGS " in *" mds"*) KIND=mos-av; SAMPLE_AV=(--audio --av-fakes 2) ;; esac
    if [ ! -f "$DATA_DIR/.complete-$KIND" ]; then
        rm -rf "$DATA_DIR" "$WORK_DIR"  # the steps resume by video id: a new sample needs a clean work dir
        python -m preprocessing.sample_data "$DATA_DIR" --folders 2 --reals 4 --fakes 1 --orphan-fakes 1 \
            --seconds 3 --seed 0 --mos "${SAMPLE_AV[@]}" ${SAMPLE_ARGS:-}
        touch "$DATA_DIR/.complete-$KIND"
    fi
    if [ ! -f "$TEST_DIR/.complete-$KIND" ]; then
        rm -rf "$TEST_DIR"  # another seed: other motion, lighting, pairings and artefacts, never trained on
        python -m preprocessing.sample_data "$TEST_DIR" --folders 1 --reals 3 --fakes 1 \
            --seconds 3 --seed 1 --prefix heldout --mos "${SAMPLE_AV[@]}" ${SAMPLE_ARGS:-}
        touch "$TEST_DIR/.complete-$KIND"
    fi
fi

echo "[run_all] DATA_DIR=$DATA_DIR WORK_DIR=$WORK_DIR CONFIGS='$CONFIGS' FOLDS='$FOLDS' SEEDS='${SEEDS:-default}' NUM_GPUS=$NUM_GPUS"
COMMON=(--data-dir "$DATA_DIR" --work-dir "$WORK_DIR" --workers "$WORKERS" ${EXTRA_ARGS:-})
python 0_detect_faces.py "${COMMON[@]}" --frame-step "$FRAME_STEP"
AV_ARGS=()  # a dissonance config (mds, mds_cpu) needs each video's sound and face track (step 1 --av)
case " $CONFIGS " in
    *" mds "*) AV_ARGS=(--av --av-size "${AV_SIZE:-224}") ;;
    *" mds_"*) AV_ARGS=(--av --av-size "${AV_SIZE:-96}") ;;
esac
python 1_extract_crops.py "${COMMON[@]}" --clip-len "$CLIP_LEN" "${AV_ARGS[@]}"
python 2_generate_landmarks.py "${COMMON[@]}"
python 3_generate_diffs.py "${COMMON[@]}"
python 4_generate_folds.py "${COMMON[@]}" --folds "$NUM_FOLDS"

if [ "$NUM_GPUS" -gt 1 ]; then TRAIN=(torchrun --standalone --nproc_per_node "$NUM_GPUS"); else TRAIN=(python); fi
mkdir -p "$WEIGHTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
own_or_aside() {  # a checkpoint trained from another WORK_DIR (another dataset's run, the sample's
    # in the default weights/) or unreadable is moved to WEIGHTS_DIR/replaced/STAMP/, never reused
    if [ -f "$1" ] && ! python -m training.origin "$1" "$WORK_DIR"; then
        mkdir -p "$WEIGHTS_DIR/replaced/$STAMP"
        mv "$1" "$WEIGHTS_DIR/replaced/$STAMP/"
        echo "[run_all] moved $1 to $WEIGHTS_DIR/replaced/$STAMP/: this fold trains again" >&2
    fi
}
ENSEMBLE=()
TEACHER_SEED="$(seeds_for "$TEACHER_CONFIG")"; TEACHER_SEED="${TEACHER_SEED%% *}"
for entry in "${PLAN[@]}"; do
    read -r config fold seed name <<< "$entry"
    best="$WEIGHTS_DIR/${name}_fold${fold}_best.pt"
    last="$WEIGHTS_DIR/${name}_fold${fold}_last.pt"
    own_or_aside "$best"
    own_or_aside "$last"  # reused or resumed only when it is this run's
    # a _best.pt is written from the first epoch on: a fold whose _last.pt says it stopped early
    # (killed) trains on from there; one without a _last.pt, or finished, is done
    if [ -f "$best" ] && ! { [ -f "$last" ] && python -m training.origin --unfinished "$last"; }; then
        echo "[run_all] $best exists: skipping training"
    else
        resume=()
        [ -f "$last" ] && resume=(--resume "$last")
        teacher=()  # a distillation student learns from this fold's frame model (the first config, first seed)
        [[ "$config" == *distill* ]] && teacher=(--teacher "$WEIGHTS_DIR/$(name_for "$TEACHER_CONFIG" "$TEACHER_SEED")_fold${fold}_best.pt")
        "${TRAIN[@]}" 5_train.py --config "configs/$config.json" --data-dir "$DATA_DIR" --work-dir "$WORK_DIR" \
            --fold "$fold" --seed "$seed" --name "$name" --weights-dir "$WEIGHTS_DIR" \
            "${resume[@]}" "${teacher[@]}" ${TRAIN_ARGS:-}
    fi
    ENSEMBLE+=("$best")
done
printf '%s\n' "${ENSEMBLE[@]}" > "$WEIGHTS_DIR/ensemble.txt"
echo "[run_all] ensemble: ${ENSEMBLE[*]} (listed in $WEIGHTS_DIR/ensemble.txt)"

# Temperature calibration of the ensemble on its validation fold, scored end to end as a test
# set would be (balanced log loss); predict_submission.sh applies it with weights/ensemble.txt.
# Only for one fold: with several, every fold's videos trained some member of the ensemble.
CALIBRATION="$WEIGHTS_DIR/calibration.json"
rm -f "$CALIBRATION"  # a stale one belongs to another ensemble
read -r -a fold_list <<< "$FOLDS"
if [ "${CALIBRATE:-1}" = "1" ] && [ "${fold_list[*]}" = "all" ]; then
    echo "[run_all] FOLDS=all: no validation fold to fit a temperature on; predictions stay uncalibrated" >&2
elif [ "${CALIBRATE:-1}" = "1" ] && [ "${#fold_list[@]}" = "1" ]; then
    VAL_DIR="$WORK_DIR/val_fold${fold_list[0]}"
    VAL_OUT="$WORK_DIR/val_fold${fold_list[0]}_predictions.csv"
    if python tools/calibrate.py --link-fold "$VAL_DIR" --work-dir "$WORK_DIR" --data-dir "$DATA_DIR" --fold "${fold_list[0]}" \
        && python 6_predict.py --test-dir "$VAL_DIR" --output "$VAL_OUT" --models "${ENSEMBLE[@]}" ${PREDICT_ARGS:-} \
        && python tools/calibrate.py --balanced --min-temperature "${CALIBRATE_MIN_T:-1}" \
            --submission "$VAL_OUT" --data-dir "$VAL_DIR" --output "$CALIBRATION"; then
        :
    else
        echo "[run_all] no calibration (see the message above): predictions stay uncalibrated" >&2
        rm -f "$CALIBRATION"
    fi
elif [ "${CALIBRATE:-1}" = "1" ]; then
    echo "[run_all] FOLDS='$FOLDS': every fold trained some member, none is left to fit a temperature on;" \
         "predictions stay uncalibrated" >&2
fi
CAL_ARGS=()
[ -f "$CALIBRATION" ] && CAL_ARGS=(--calibration "$CALIBRATION")

if [ -n "${TEST_DIR:-}" ]; then
    OUT="$WORK_DIR/submission_$(basename "$TEST_DIR").csv"
    EXPLAIN_ARGS=(); EVAL_ARGS=()
    if [ "${EXPLAIN:-$SAMPLE}" = "1" ]; then  # a page per test video, linked from the evaluation report
        EXPLAIN_DIR="$WORK_DIR/explain_$(basename "$TEST_DIR")"
        EXPLAIN_ARGS=(--explain "$EXPLAIN_DIR"); EVAL_ARGS=(--explanations "$EXPLAIN_DIR")
    fi
    python 6_predict.py --test-dir "$TEST_DIR" --output "$OUT" --models "${ENSEMBLE[@]}" "${CAL_ARGS[@]}" \
        "${EXPLAIN_ARGS[@]}" ${PREDICT_ARGS:-}
    if find "$TEST_DIR" -name metadata.json | grep -q .; then
        python tools/evaluate.py --submission "$OUT" --data-dir "$TEST_DIR" "${EVAL_ARGS[@]}"
    fi
fi
# Realism (MOS) models (DFGC-2023 VRA) on the same steps, when the metadata rates videos.
if [ -n "$MOS_CONFIGS" ] && head -n 1 "$WORK_DIR/folds.csv" | tr ',' '\n' | grep -qx mos; then
    MOS_ENSEMBLE=()
    # VRA's schedule and early stopping read a validation score: FOLDS=all trains them on fold 0's split
    MOS_FOLDS="$(printf '%s\n' $FOLDS | sed 's/^all$/0/' | awk '!seen[$0]++' | tr '\n' ' ')"
    for config in $MOS_CONFIGS; do
        for fold in $MOS_FOLDS; do
            best="$WEIGHTS_DIR/${config}_fold${fold}_best.pt"
            own_or_aside "$best"
            if [ -f "$best" ]; then
                echo "[run_all] $best exists: skipping training"
            else
                resume=()
                last="$WEIGHTS_DIR/${config}_fold${fold}_last.pt"
                own_or_aside "$last"  # resumed only when it is this run's
                [ -f "$last" ] && resume=(--resume "$last")
                "${TRAIN[@]}" 5_train.py --config "configs/$config.json" --data-dir "$DATA_DIR" --work-dir "$WORK_DIR" \
                    --fold "$fold" --name "$config" --weights-dir "$WEIGHTS_DIR" "${resume[@]}" ${TRAIN_ARGS:-}
            fi
            MOS_ENSEMBLE+=("$best")
        done
    done
    printf '%s\n' "${MOS_ENSEMBLE[@]}" > "$WEIGHTS_DIR/ensemble_mos.txt"
    echo "[run_all] MOS ensemble: ${MOS_ENSEMBLE[*]} (listed in $WEIGHTS_DIR/ensemble_mos.txt)"
    WEIGHT_ARGS=()
    read -r -a mos_weights <<< "$MOS_WEIGHTS"
    if [ "${#mos_weights[@]}" -gt 0 ] && [ "${#mos_weights[@]}" = "${#MOS_ENSEMBLE[@]}" ]; then
        WEIGHT_ARGS=(--weights "${mos_weights[@]}")
    fi
    if [ -n "${TEST_DIR:-}" ]; then
        MOS_OUT="$WORK_DIR/submission_mos_$(basename "$TEST_DIR").csv"
        python 6_predict.py --test-dir "$TEST_DIR" --output "$MOS_OUT" --models "${MOS_ENSEMBLE[@]}" \
            "${WEIGHT_ARGS[@]}" ${PREDICT_ARGS:-}
        if find "$TEST_DIR" -name metadata.json -exec grep -l '"mos"' {} + 2>/dev/null | grep -q .; then
            python tools/evaluate.py --submission "$MOS_OUT" --data-dir "$TEST_DIR"
        fi
    fi
fi
echo "[run_all] done: artifacts in $WORK_DIR, checkpoints in $WEIGHTS_DIR"
