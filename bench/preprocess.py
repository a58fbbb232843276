#!/usr/bin/env python
"""Benchmark steps 0-4 on DATA_DIR and compare step 0 with the 1st-place approach
(MTCNN on every frame at half resolution) on the same videos, in the same run.

    python bench/preprocess.py DATA_DIR [--limit N] [--workers N] [--skip-baseline]

Prints one JSON object: per step wall seconds, videos/s, frames decoded and detected;
the baseline's figures; step 0's speed-up per video; and whether step 0 wrote boxes
for every frame the later steps use.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.artifacts import FaceBoxes, WorkDir  # noqa: E402
from preprocessing.crops import extract_crops  # noqa: E402
from preprocessing.dataset import load_dataset  # noqa: E402
from preprocessing.detection import FaceDetector  # noqa: E402
from preprocessing.diffs import generate_diffs  # noqa: E402
from preprocessing.faces import DEFAULT_FRAME_STEP, detect_faces  # noqa: E402
from preprocessing.folds import generate_folds  # noqa: E402
from preprocessing.landmarks import generate_landmarks  # noqa: E402
from preprocessing.runner import StepOptions  # noqa: E402
from preprocessing.video import FrameReader  # noqa: E402


def baseline_every_frame(detector: FaceDetector, paths, batch_size: int = 16) -> dict:
    """selim's detector pass: decode every frame, halve it, MTCNN on all of them."""
    t0 = time.time()
    decoded = detected = faces = 0
    for path in paths:
        reader = FrameReader(path)
        batch = []
        for _, frame in reader:
            batch.append(frame)
            if len(batch) == batch_size:
                faces += sum(len(d.boxes) for d in detector.detect(batch, 0.5))
                detected += len(batch)
                batch = []
        if batch:
            faces += sum(len(d.boxes) for d in detector.detect(batch, 0.5))
            detected += len(batch)
        decoded += reader.frames_decoded
    wall = time.time() - t0
    return {"wall_s": round(wall, 2), "videos": len(paths), "videos_per_s": round(len(paths) / wall, 4),
            "s_per_video": round(wall / max(len(paths), 1), 3), "frames_decoded": decoded,
            "frames_detected": detected, "faces": faces}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--work-dir", type=Path, default=None, help="default: a fresh temp folder")
    p.add_argument("--limit", type=int, default=None, help="at most N videos per step (and in the baseline)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--frame-step", type=int, default=DEFAULT_FRAME_STEP)
    p.add_argument("--skip-baseline", action="store_true")
    a = p.parse_args()

    work_dir = a.work_dir or Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    opts = StepOptions(data_dir=a.data_dir, work_dir=work_dir, workers=a.workers, limit=a.limit,
                       force=True, progress=False)
    steps = {}
    for name, fn, kw in [("0_detect_faces", detect_faces, {"frame_step": a.frame_step}),
                         ("1_extract_crops", extract_crops, {}),
                         ("2_generate_landmarks", generate_landmarks, {}),
                         ("3_generate_diffs", generate_diffs, {}),
                         ("4_generate_folds", generate_folds, {"folds": 2})]:
        t0 = time.time()
        r = fn(opts, **kw)
        wall = time.time() - t0
        steps[name] = {"wall_s": round(wall, 2), "videos": r.done, "failed": r.failed,
                       "videos_per_s": round(r.done / wall, 4) if wall > 0 else None,
                       "frames_decoded": int(r.counters.get("frames_decoded", 0)),
                       "frames_detected": int(r.counters.get("frames_detected", 0))}

    ds = load_dataset(a.data_dir)
    work = WorkDir(work_dir)
    step0_videos = [v for v in ds.videos if v.detects_own_faces and work.boxes(v.id).exists()]
    covered = all(sorted(b.frames) == list(range(0, b.num_frames, a.frame_step))
                  for b in (FaceBoxes.load(work.boxes(v.id)) for v in step0_videos))
    out = {"data_dir": str(a.data_dir), "work_dir": str(work_dir), "frame_step": a.frame_step,
           "steps": steps, "step0_boxes_cover_every_used_frame": covered}
    if not a.skip_baseline and step0_videos:
        import torch

        out["threads"] = torch.get_num_threads()
        # selim's detector: facenet-pytorch MTCNN, thresholds (0.85, 0.95, 0.95), default min face 20
        selim = FaceDetector(thresholds=(0.85, 0.95, 0.95), min_face_size=20, min_prob=0.0)
        base = baseline_every_frame(selim, [v.path for v in step0_videos])
        s0 = steps["0_detect_faces"]["wall_s"] / len(step0_videos)
        out["baseline_every_frame_half_res"] = base
        out["step0_s_per_video"] = round(s0, 3)
        out["step0_speedup_per_video"] = round(base["s_per_video"] / s0, 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
