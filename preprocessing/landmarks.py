"""Step 2: five MTCNN landmarks (eyes, nose, mouth corners) for each crop of the videos
whose boxes came from themselves (originals and unpaired fakes).

A paired fake needs none of its own: it is pixel-aligned with its original, whose
landmarks serve both (the blackout augmentations of step 5 rely on this).
"""
from __future__ import annotations

import io

import cv2
import numpy as np

from .artifacts import CropManifest, WorkDir, atomic_dir, parse_crop_name, read_png
from .crops import videos_with_crops
from .detection import FaceDetector
from .runner import StepOptions, StepResult, Task, run_tasks, worker_state

STEP = "2_generate_landmarks"
DETECT_SIZE = 256  # crops are padded to a square and resized to this, so MTCNN can batch them


def crop_landmarks(detector: FaceDetector, crops: list[np.ndarray], size: int = DETECT_SIZE) -> list[np.ndarray | None]:
    """(5, 2) float32 landmarks in each crop's pixels, of the face nearest the crop centre
    (the crop was cut around it); None where MTCNN finds no face."""
    batch, scales = [], []
    for crop in crops:
        h, w = crop.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), np.uint8)
        square[:h, :w] = crop  # pad right/bottom: crop pixels keep their coordinates
        batch.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR))
        scales.append(side / size)
    out: list[np.ndarray | None] = []
    for crop, scale, det in zip(crops, scales, detector.detect(batch)):
        if len(det.boxes) == 0:
            out.append(None)
            continue
        h, w = crop.shape[:2]
        centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2 * scale
        best = int(np.argmin(np.linalg.norm(centres - np.array([w / 2, h / 2]), axis=1)))
        out.append((det.landmarks[best] * scale).astype(np.float32))
    return out


def _init(state: dict, device: str | None):
    # Crops are tight around a face: a lower final threshold keeps blurry/profile faces.
    state["detector"] = FaceDetector(device=device, thresholds=(0.6, 0.7, 0.7), min_prob=0.5)


def _process(task: Task) -> dict:
    work = WorkDir(task.payload["work_dir"])
    manifest = CropManifest.load(work.crop_manifest(task.video))
    detector = worker_state()["detector"]
    found = missed = 0
    with atomic_dir(work.landmarks_dir(task.video)) as tmp:
        names = sorted(manifest.crops, key=parse_crop_name)
        for i in range(0, len(names), 32):
            chunk = names[i:i + 32]
            crops = [read_png(work.crops_dir(task.video) / n) for n in chunk]
            for name, points in zip(chunk, crop_landmarks(detector, crops)):
                if points is None:
                    missed += 1
                    continue
                frame, face = parse_crop_name(name)
                buf = io.BytesIO()
                np.save(buf, points)
                (tmp / f"{frame}_{face}.npy").write_bytes(buf.getvalue())
                found += 1
    counters = {"landmarks": found, "crops_without_landmarks": missed, "frames_detected": found + missed}
    if found == 0:
        counters["note"] = f"no landmarks found in any of {missed} crops"
    return counters


def generate_landmarks(opts: StepOptions) -> StepResult:
    work = opts.work
    tasks = [Task(v.id, v.group, {"work_dir": str(work.root)})
             for v, m in videos_with_crops(opts)
             if m.boxes_from == v.id]  # a paired fake uses its original's landmarks
    return run_tasks(STEP, tasks, _process, lambda t: work.landmarks_dir(t.video).exists(), opts,
                     init=_init, init_kwargs={"device": opts.device})
