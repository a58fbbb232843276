#!/usr/bin/env python
"""Prediction speed against its floor, on the same videos in the same run.

    python bench/predict.py TEST_DIR [--models CKPT ...] [--frames 32] [--limit N]

Without --models it uses weights/ensemble.txt. Prints one JSON object: seconds per video
of 6_predict's pipeline (decode + detect + models + aggregation, with its read-ahead
threads), and the decode-only seconds for the same sampled frames of the same videos
(the floor: no pipeline can beat decoding what it looks at).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.predictor import (AMP_MODES, DEFAULT_DETECT_EVERY, DEFAULT_DETECT_LONG_SIDE,  # noqa: E402
                                 FaceExtractor, amp_dtype, clip_span, list_videos, load_models, predict_dir,
                                 read_ensemble)
from preprocessing.detection import select_device  # noqa: E402
from preprocessing.video import FrameReader  # noqa: E402


def decode_floor(videos, num_frames: int, models) -> tuple[float, int]:
    """Decode exactly the frames 6_predict decodes (its own frame plan), nothing else."""
    t0, decoded = time.time(), 0
    plan = FaceExtractor(num_frames, lambda fps: clip_span(models, fps))
    for path in videos:
        try:
            reader = FrameReader(path)
            _, _, wanted = plan.plan(reader)
            for _ in reader.select(wanted):
                pass
            decoded += reader.frames_decoded
        except Exception:
            continue
    return time.time() - t0, decoded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("test_dir", type=Path)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY, help="6_predict's --detect-every")
    p.add_argument("--detect-size", type=int, default=DEFAULT_DETECT_LONG_SIDE, help="6_predict's --detect-size")
    p.add_argument("--min-height", type=int, default=0, help="only videos at least this tall (e.g. 1080)")
    p.add_argument("--amp", default="auto", choices=AMP_MODES, help="6_predict's --amp")
    a = p.parse_args()
    models = a.models
    if not models:
        models = read_ensemble(Path(__file__).resolve().parents[1] / "weights" / "ensemble.txt")
    videos = list_videos(a.test_dir)
    if a.min_height:
        from preprocessing.video import probe

        videos = [v for v in videos if min((info := probe(v)).width, info.height) >= a.min_height]
    videos = videos[:a.limit] if a.limit else videos
    if not videos:
        print(json.dumps({"error": "no videos"}))
        return 1
    import torch

    loaded = load_models(models, torch.device("cpu"))
    clip_len = clip_span(loaded)
    # the sub-folder holding only the chosen videos is not needed: predict_dir scores the folder,
    # so time the chosen videos by linking them into a temp folder
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    warm = Path(tempfile.mkdtemp(prefix="bench-predict-warm-"))
    try:
        for v in videos:
            (tmp / v.name).symlink_to(v.resolve())
        floor_s, decoded = decode_floor(videos, a.frames, loaded)
        # warm-up (first forward passes allocate and pick kernels): steady state is what a
        # 4000-video test set sees
        (warm / videos[0].name).symlink_to(videos[0].resolve())
        predict_dir(warm, models, num_frames=a.frames, workers=a.workers, detect_every=a.detect_every,
                    detect_long_side=a.detect_size, progress=False, amp=a.amp)
        result = predict_dir(tmp, models, num_frames=a.frames, workers=a.workers, detect_every=a.detect_every,
                             detect_long_side=a.detect_size, progress=False, amp=a.amp)
    finally:  # the folders hold only links, but one per run piled up in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(warm, ignore_errors=True)
    n = len(videos)
    seconds = result.seconds - result.timings["load_models_s"]  # a one-time cost, not per video
    out = {"test_dir": str(a.test_dir), "videos": n, "models": [Path(m).name for m in models],
           "frames": a.frames, "clip_len": clip_len, "detect_every": a.detect_every, "detect_size": a.detect_size,
           "threads": torch.get_num_threads(), "amp": a.amp,
           "model_dtype": str(amp_dtype(torch.device(select_device()), a.amp) or torch.float32).replace("torch.", ""),
           "s_per_video": round(seconds / n, 3), "decode_floor_s_per_video": round(floor_s / n, 3),
           "ratio_to_floor": round(seconds / max(floor_s, 1e-9), 2),
           "frames_decoded_per_video": round(decoded / n, 1),
           # (realism and dissonance ensembles detect every sampled frame whatever --detect-every says)
           "frames_detected_per_video": round(result.timings["frames_detected"] / n, 1),
           "failed": len(result.errors),
           "stage_s": {k: round(v, 2) for k, v in result.timings.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
