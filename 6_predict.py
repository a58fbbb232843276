#!/usr/bin/env python
"""Step 6: score videos with an ensemble of checkpoints.

    python 6_predict.py --test-dir DIR --output OUT.csv --models weights/a.pt weights/b.pt   # a submission
    python 6_predict.py VIDEO [VIDEO or FOLDER ...] [--models ...] [--json]                 # check videos

The first form writes the CSV `filename,label` (a row per video, 0.5 for one that cannot
be scored) and OUT_errors.jsonl. The second prints one line per video: its name, P(fake),
the verdict (FAKE at >= 0.5) and the faces used; with --json, one JSON object per video
holding every model's score of every frame and face. Without --models both use
weights/ensemble.txt, with weights/calibration.json when run_all.sh fitted one.
Either form with --explain DIR also writes DIR/index.html and a page per video: the sampled
frames with their boxes, the scores over time, and Grad-CAM (CNNs) or attention-rollout
(ViT) heatmaps over the faces each model scored.

Realism (MOS) checkpoints (`task: mos`, DFGC-2023 VRA) write `filename,mos` instead: each
video's MOS is the mean over --sequences random runs of consecutive frames (seeded by
--seed and the file name), the models combined with --weights (VRA: 0.75 0.25). MOS and
detection checkpoints cannot be mixed in one call.
"""
import argparse
import sys
from pathlib import Path



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("videos", nargs="*", type=Path, help="video files or folders to check (instead of --test-dir)")
    p.add_argument("--test-dir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=None, help="the CSV (required with --test-dir)")
    p.add_argument("--models", nargs="+", default=None,
                   help="checkpoints (*_best.pt) of any family, or published weight files; "
                        "default: weights/ensemble.txt")
    p.add_argument("--json", action="store_true", help="print per-frame, per-face scores as JSON lines")
    p.add_argument("--explain", type=Path, default=None, metavar="OUT_DIR",
                   help="write an HTML page per video (frames, boxes, scores over time, heatmaps) and index.html")
    p.add_argument("--frames", type=int, default=32, help="frames sampled evenly per video (default 32)")
    p.add_argument("--strategy", default="confident", choices=["confident", "ntech", "mean"],
                   help="how face probabilities become a video's (default: selim's confident strategy)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calibration", type=Path, default=None, help="temperature JSON fitted on validation")
    # (the two defaults are inference.predictor's DEFAULT_DETECT_EVERY and DEFAULT_DETECT_LONG_SIDE,
    # written out so that --help does not import torch; tests/test_predict.py holds them equal)
    p.add_argument("--detect-every", type=int, default=8,
                   help="run MTCNN on every N-th sampled frame and the last; the frames between get boxes "
                        "interpolated from the two detections around them, refined by MTCNN's R-Net and O-Net "
                        "(default %(default)s: mean box IoU 0.93 against step 0's detection on every frame, in "
                        "a sixth of its time; see bench/boxes_iou.py). With a realism (MOS) or dissonance model "
                        "in the ensemble every sampled frame is detected, whatever this says")
    p.add_argument("--detect-size", type=int, default=960,
                   help="long side of the frame copy MTCNN runs on (default %(default)s = step 0's scale: the "
                        "detected frames' crops are the training crops; 512 is faster and less exact)")
    p.add_argument("--clips", type=int, default=8,
                   help="clips per video for sequence models (default 8); each model crops faces with "
                        "the margin, size and clip frame rate recorded in its checkpoint")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per model for the ensemble mean (default: equal; VRA's MOS ensemble: 0.75 0.25)")
    p.add_argument("--sequences", type=int, default=10,
                   help="realism (MOS) models: random runs of consecutive frames averaged per video (VRA: 10)")
    p.add_argument("--seed", type=int, default=0, help="realism models: seed of the random runs (default 0)")
    p.add_argument("--workers", type=int, default=2, help="threads decoding and detecting ahead")
    p.add_argument("--device", default=None)
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="the face models' precision: auto (default) = bf16/fp16 autocast on a GPU and bf16 on a "
                        "CPU with native bf16 (AVX512-BF16, AMX), on = also bf16 on any other CPU (emulated, "
                        "slower), off = float32 everywhere; detection and dissonance models stay float32")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    if bool(a.videos) == bool(a.test_dir):
        p.error("give either VIDEO/FOLDER arguments or --test-dir (with --output)")
    if a.test_dir and not a.output:
        p.error("--test-dir needs --output")

    from inference.predictor import (dir_videos, list_videos, predict_videos, read_ensemble, write_errors,
                                     write_submission)

    if a.models is None:
        ensemble = Path(__file__).resolve().parent / "weights" / "ensemble.txt"
        if not ensemble.is_file():
            print("error: no --models and weights/ensemble.txt is missing: train first (bash run_all.sh)",
                  file=sys.stderr)
            return 1
        a.models = read_ensemble(ensemble)
        default_cal = ensemble.with_name("calibration.json")
        if a.calibration is None and default_cal.is_file():
            a.calibration = default_cal
    try:
        if a.test_dir:
            videos = dir_videos(a.test_dir)
            if not videos:
                print(f"error: no video files under {a.test_dir}", file=sys.stderr)
                return 1
        else:
            videos = []
            for item in a.videos:
                if item.is_dir():
                    videos += [(v.as_posix(), v) for v in list_videos(item)]
                elif item.exists():
                    videos.append((item.as_posix(), item))
                else:
                    print(f"error: {item} does not exist", file=sys.stderr)
                    return 1
        result = predict_videos(videos, a.models, num_frames=a.frames, strategy=a.strategy,
                                batch_size=a.batch_size, device=a.device, calibration=a.calibration,
                                workers=a.workers, detect_every=a.detect_every, num_clips=a.clips,
                                detect_long_side=a.detect_size, progress=not a.no_progress and bool(a.test_dir),
                                details=not a.test_dir, explain_dir=a.explain, weights=a.weights,
                                mos_sequences=a.sequences, seed=a.seed, amp=a.amp)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not a.test_dir:
        print_verdicts(result, a.json)
    if a.explain:
        print(f"[6_predict] explanations: {a.explain / 'index.html'} ({result.timings.get('explain_s', 0):.1f}s)",
              file=sys.stderr if not a.test_dir else sys.stdout)
    if a.output:
        mos = result.task == "mos"
        write_submission(a.output, result.rows, "mos" if mos else "label")
        errors_path = a.output.with_name(a.output.stem + "_errors.jsonl")
        if result.errors or result.notes:  # failures (the fallback score), then remarks (e.g. the fallback decoder)
            write_errors(errors_path, result.errors + result.notes)
        n = len(result.rows)
        print(f"[6_predict] {n} videos -> {a.output} in {result.seconds:.1f}s ({result.seconds / max(n, 1):.2f} "
              f"s/video), {len(result.errors)} scored "
              + (f"the training mean MOS {result.errors[0]['prediction']:.2f}" if mos and result.errors else "0.5")
              + " (unreadable or no face)"
              + (f", {len(result.notes)} with notes" if result.notes else "")
              + (f", see {errors_path}" if result.errors or result.notes else ""))
    return 0


def print_verdicts(result, as_json: bool) -> None:
    """One line per video: name, P(fake), verdict, faces used (or why none); or JSON lines."""
    import json

    errors = {e["video"]: e["error"] for e in result.errors}
    notes = {e["video"]: e["note"] for e in result.notes}
    for name, prob in result.rows:
        d = result.details.get(name)
        if result.task == "mos":
            if as_json:
                print(json.dumps({"video": name, "mos": round(prob, 4),
                                  **({"error": errors[name]} if name in errors else {}), **(d or {})}))
            elif name in errors:
                print(f"{name}\tMOS {prob:.2f}\tUNKNOWN\t{errors[name]}")
            else:
                print(f"{name}\tMOS {prob:.2f}\t{d['faces']} faces on {d['frames']} frames")
            continue
        if as_json:
            print(json.dumps({"video": name, "p_fake": round(prob, 5),
                              "verdict": "UNKNOWN" if name in errors else ("FAKE" if prob >= 0.5 else "REAL"),
                              **({"error": errors[name]} if name in errors else {}),
                              **({"note": notes[name]} if name in notes else {}), **(d or {})}))
        elif name in errors:
            print(f"{name}\t{prob:.4f}\tUNKNOWN\t{errors[name]}")
        else:
            verdict = "FAKE" if prob >= 0.5 else "REAL"
            print(f"{name}\t{prob:.4f}\t{verdict}\t{d['faces']} faces on {d['frames']} frames"
                  + (f"\t({notes[name]})" if name in notes else ""))


if __name__ == "__main__":
    sys.exit(main())
