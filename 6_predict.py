#!/usr/bin/env python
"""Step 6: score every video of a folder with an ensemble of checkpoints -> CSV filename,label.

    python 6_predict.py --test-dir DIR --output OUT.csv --models weights/a.pt weights/b.pt
"""
import argparse
import sys
from pathlib import Path



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--test-dir", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--models", required=True, nargs="+", help="checkpoints (*_best.pt) of any family")
    p.add_argument("--frames", type=int, default=32, help="frames sampled evenly per video (default 32)")
    p.add_argument("--strategy", default="confident", choices=["confident", "ntech", "mean"],
                   help="how face probabilities become a video's (default: selim's confident strategy)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calibration", type=Path, default=None, help="temperature JSON fitted on validation")
    p.add_argument("--detect-every", type=int, default=1,
                   help="run MTCNN on every N-th sampled frame; the others reuse the nearest boxes (default 1: "
                        "reuse costs box IoU, see bench/boxes_iou.py)")
    p.add_argument("--detect-size", type=int, default=512,
                   help="long side of the frame copy MTCNN runs on (default 512: mean box IoU 0.945 against "
                        "step 0's; 960 = step 0's scale, exactly the training crops, about 1.4x the detection time)")
    p.add_argument("--clips", type=int, default=8,
                   help="clips per video for sequence models (default 8); each model crops faces with "
                        "the margin, size and clip frame rate recorded in its checkpoint")
    p.add_argument("--workers", type=int, default=2, help="threads decoding and detecting ahead")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()

    from inference.predictor import list_videos, predict_dir, write_errors, write_submission

    try:
        if not list_videos(a.test_dir):
            print(f"error: no video files under {a.test_dir}", file=sys.stderr)
            return 1
        result = predict_dir(a.test_dir, a.models, num_frames=a.frames, strategy=a.strategy,
                             batch_size=a.batch_size, device=a.device, calibration=a.calibration,
                             workers=a.workers, detect_every=a.detect_every, num_clips=a.clips,
                             detect_long_side=a.detect_size,
                             progress=not a.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_submission(a.output, result.rows)
    errors_path = a.output.with_name(a.output.stem + "_errors.jsonl")
    if result.errors or result.notes:  # failures (scored 0.5), then remarks (e.g. the fallback decoder)
        write_errors(errors_path, result.errors + result.notes)
    n = len(result.rows)
    print(f"[6_predict] {n} videos -> {a.output} in {result.seconds:.1f}s ({result.seconds / max(n, 1):.2f} s/video), "
          f"{len(result.errors)} scored {0.5} (unreadable or no face)"
          + (f", {len(result.notes)} with notes" if result.notes else "")
          + (f", see {errors_path}" if result.errors or result.notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
