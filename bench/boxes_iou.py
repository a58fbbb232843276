#!/usr/bin/env python
"""How far the prediction shortcut's face boxes are from per-frame detection.

    python bench/boxes_iou.py DATA_DIR [--frames 32] [--limit N]

For every video under DATA_DIR, 6_predict's anchors (`frame_plan`) are decoded once. The
reference detects faces on EVERY anchor at step 0's scale (long side 960, step 0's
`min_face_size`). Each setting of `FaceExtractor.detect_boxes` (detect every k-th anchor
and on the last at a long side L, the anchors between interpolated from the two around them
and, unless the setting's name says `interpolated`, refined by MTCNN's R-Net and O-Net;
retries when nothing is found) is scored against it: each reference face takes the best IoU among the setting's boxes
on the same anchor (0 when missed); a setting's box that overlaps no reference face by
IoU >= 0.5 counts as extra. Prints one JSON object: per setting, the mean and median IoU,
the fraction of reference faces with IoU >= 0.5 and >= 0.9, the extra boxes, `nearest` (the
same from the same detections with the earlier rule: every anchor took the nearest
detected anchor's boxes), the per-video
mean IoU (in the order of `videos`) and the seconds of detection per video: wall
(`detect_s_per_video`) and the process's CPU time (`detect_cpu_s_per_video`, steadier on
a shared machine; MTCNN uses every torch thread, so it is about threads x wall).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.predictor import (FaceExtractor, box_iou, detection_anchors, frame_plan,  # noqa: E402
                                 list_videos)
from preprocessing.detection import (DEFAULT_DETECT_LONG_SIDE, FaceDetector, detection_scale,  # noqa: E402
                                     min_face_size)
from preprocessing.video import FrameReader  # noqa: E402

# (name, detect_every, long side, refine the boxes between detections): 6_predict's default
# (every8_960) and the default before it (every1_512) among them.
SETTINGS = [("every1_512", 1, 512, True), ("every2_512", 2, 512, True), ("every4_512", 4, 512, True),
            ("every8_512", 8, 512, True), ("every4_512_interpolated", 4, 512, False),
            ("every8_512_interpolated", 8, 512, False), ("every4_960", 4, 960, True), ("every8_960", 8, 960, True),
            ("every8_960_interpolated", 8, 960, False)]


def reference_boxes(detector: FaceDetector, frames: dict, anchors: list[int], batch_size: int = 16) -> dict:
    """Step 0's detection on every anchor: long side 960, step 0's min face size."""
    h, w = frames[anchors[0]].shape[:2]
    scale = detection_scale(w, h, DEFAULT_DETECT_LONG_SIDE)
    out = {}
    for i in range(0, len(anchors), batch_size):
        chunk = anchors[i:i + batch_size]
        for a, det in zip(chunk, detector.detect([frames[k] for k in chunk], scale, min_face_size(w, h, scale))):
            out[a] = det.boxes
    return out


def score(ref: dict, got: dict) -> tuple[list[float], int]:
    """(best IoU of every reference face, number of extra boxes)."""
    ious, extra = [], 0
    for a, r in ref.items():
        g = got.get(a, np.zeros((0, 4)))
        r, g = np.asarray(r, np.float64).reshape(-1, 4), np.asarray(g, np.float64).reshape(-1, 4)
        m = box_iou(r, g) if len(r) and len(g) else np.zeros((len(r), len(g)))
        ious += (m.max(axis=1) if len(g) else np.zeros(len(r))).tolist()
        extra += int((m.max(axis=0) < 0.5).sum()) if len(r) else len(g)
    return ious, extra


def nearest_fill(got: dict, detected: list[int], anchors: list[int]) -> dict:
    """The rule before interpolation: every anchor takes the nearest detected anchor's boxes."""
    keys = np.array(detected)
    return {a: got[int(keys[np.argmin(np.abs(keys - a))])] for a in anchors}


def summary(ious: list[float]) -> dict:
    x = np.asarray(ious, np.float64)
    if not len(x):
        return {"mean_iou": None, "median_iou": None, "frac_iou_ge_0.5": None, "frac_iou_ge_0.9": None}
    return {"mean_iou": round(float(x.mean()), 4), "median_iou": round(float(np.median(x)), 4),
            "frac_iou_ge_0.5": round(float((x >= 0.5).mean()), 4),
            "frac_iou_ge_0.9": round(float((x >= 0.9).mean()), 4)}


def mean(x: list[float]) -> float | None:
    return round(float(np.mean(x)), 3) if x else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args()
    videos = list_videos(a.data_dir)
    videos = videos[:a.limit] if a.limit else videos
    if not videos:
        print(json.dumps({"error": f"no videos under {a.data_dir}"}))
        return 1

    detector = FaceDetector(device="cpu")
    detector.detect([np.zeros((540, 960, 3), np.uint8)], 1.0, 20)  # warm up before timing
    extractors = {}
    for name, every, long_side, refine in SETTINGS:
        ex = FaceExtractor(num_frames=a.frames, detect_every=every, detect_long_side=long_side, device="cpu",
                           refine=refine)
        ex._local.detector = detector  # one MTCNN (same settings) for all, loaded once
        extractors[name] = ex

    names, errors = [], []
    ref_faces, ref_seconds, ref_cpu = 0, [], []
    per = {n: {"ious": [], "extra": 0, "seconds": [], "cpu": [], "per_video": [], "retried": [],
               "nearest_ious": [], "nearest_extra": 0} for n, *_ in SETTINGS}
    for path in videos:
        name = path.relative_to(a.data_dir).as_posix()
        try:
            reader = FrameReader(path)
            anchors, _, wanted = frame_plan(reader.info.frame_count, a.frames)
            frames = dict(iter(reader.select(wanted)))
            anchors = [k for k in anchors if k in frames]
            if not anchors:
                raise ValueError("no sampled frame decoded")
        except Exception as e:  # a bad video is reported, not fatal
            errors.append({"video": name, "error": f"{type(e).__name__}: {e}"})
            continue
        names.append(name)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = reference_boxes(detector, frames, anchors)
        ref_seconds.append(time.perf_counter() - t0)
        ref_cpu.append(time.process_time() - c0)
        ref_faces += sum(len(b) for b in ref.values())
        for setting, ex in extractors.items():
            t0, c0 = time.perf_counter(), time.process_time()
            got, _, long_side = ex.detect_boxes(frames, anchors)
            s = per[setting]
            s["seconds"].append(time.perf_counter() - t0)
            s["cpu"].append(time.process_time() - c0)
            ious, extra = score(ref, got)
            s["ious"] += ious
            s["extra"] += extra
            s["per_video"].append(round(float(np.mean(ious)), 4) if ious else None)
            if long_side != ex.long_side:
                s["retried"].append(name)
            ious, extra = score(ref, nearest_fill(got, detection_anchors(anchors, ex.detect_every), anchors))
            s["nearest_ious"] += ious
            s["nearest_extra"] += extra
        print(f"[boxes_iou] {name}: {len(anchors)} anchors, {sum(len(b) for b in ref.values())} faces, "
              + ", ".join(f"{n} {per[n]['per_video'][-1]}" for n in per), file=sys.stderr, flush=True)

    result = {
        "data_dir": str(a.data_dir), "frames": a.frames, "videos": names, "errors": errors,
        "reference": {"detect_every": 1, "long_side": DEFAULT_DETECT_LONG_SIDE, "faces": ref_faces,
                      "videos_without_faces": [n for n, s in zip(names, per[SETTINGS[0][0]]["per_video"])
                                               if s is None],
                      "detect_s_per_video": mean(ref_seconds), "detect_cpu_s_per_video": mean(ref_cpu)},
        "settings": {},
    }
    for setting, every, long_side, refine in SETTINGS:
        s = per[setting]
        result["settings"][setting] = {
            "detect_every": every, "long_side": long_side, "refine": refine and every > 1, **summary(s["ious"]),
            "extra_boxes": s["extra"], "retried": s["retried"],
            "detect_s_per_video": mean(s["seconds"]), "detect_cpu_s_per_video": mean(s["cpu"]),
            "per_video_mean_iou": s["per_video"],
            "nearest": {**summary(s["nearest_ious"]), "extra_boxes": s["nearest_extra"]},
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
