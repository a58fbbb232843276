"""Step 1's audio-visual part (`1_extract_crops.py --av`): what the dissonance model
(Chugh et al., MDS) reads, per video:

    WORK_DIR/audio/{id}.wav     its first audio track, 16 kHz mono 16-bit PCM (`preprocessing.audio`)
    WORK_DIR/tracks/{id}.mp4    its face track: a square S x S crop of the main face on EVERY
                                decoded frame, as H.264 (CRF 18; 20x smaller than raw frames)
    WORK_DIR/tracks/{id}.json   {"times": each track frame's presentation time in seconds (a
                                variable frame rate is aligned with the audio by time, not by
                                index), "margin", "size", "fps"}; written last: the video is done

The face on a frame is cut with the box of the nearest detected frame (step 0 detects
every `--frame-step`-th frame; a face moves little in a third of a second and the
margin absorbs it): the largest face there, a square of side (1 + 2 margin) max(w, h)
around the box centre, resized to S (`--av-size`). A FAKE whose original was detected
uses the original's boxes, as its crops do. A video without an audio track gets a note
(the model abstains on it), not a failure, and no face track.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .artifacts import FaceBoxes, WorkDir
from .dataset import Dataset, load_dataset
from .runner import SkipVideo, StepError, StepOptions, StepResult, Task, run_tasks

STEP = "1_extract_av"
DEFAULT_AV_SIZE = 96
DEFAULT_AV_MARGIN = 0.15


def audio_path(work: WorkDir, video_id: str) -> Path:
    return work.root / "audio" / f"{video_id}.wav"


def track_path(work: WorkDir, video_id: str) -> Path:
    """The track's JSON (times, margin, size); the frames are the .mp4 beside it."""
    return work.root / "tracks" / f"{video_id}.json"


def main_face_boxes(boxes: FaceBoxes) -> tuple[np.ndarray, np.ndarray]:
    """(detected frame indices (K,), the largest face's box on each (K, 4)), frames without a face left out."""
    keys, rows = [], []
    for frame, faces in sorted(boxes.frames.items()):
        if faces:
            best = max(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            keys.append(frame)
            rows.append(best[:4])
    return np.asarray(keys, dtype=np.int64), np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def square_crop(frame: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """A square of side (1 + 2 margin) max(w, h) centred on the box, zero-padded at the
    frame's edges, resized to size x size."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = size / max(side, 1.0)
    # an affine map from the square to size x size: exact at the edges, pads with zeros
    m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], dtype=np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def face_track(path: str | Path, boxes: FaceBoxes, size: int = DEFAULT_AV_SIZE,
               margin: float = DEFAULT_AV_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, size, size, 3) uint8, times (N,) float32 s) of one video, every frame."""
    from .audio import frame_times
    from .video import FrameReader

    keys, rows = main_face_boxes(boxes)
    if not len(keys):
        raise SkipVideo("no face in the boxes: no face track")
    crops, indices = [], []
    for idx, frame in FrameReader(path):
        nearest = int(np.argmin(np.abs(keys - idx)))
        crops.append(square_crop(frame, rows[nearest], margin, size))
        indices.append(idx)
    if not crops:
        raise ValueError("no frame could be decoded")
    times = np.asarray(frame_times(path), dtype=np.float64)
    if len(times) >= len(crops):
        times = times[np.asarray(indices)]
    else:  # the timestamps disagree with the decoder (a broken file): fall back on the nominal rate
        times = np.asarray(indices, dtype=np.float64) / float(boxes.fps or 25.0)
    return np.stack(crops), times.astype(np.float32)


def save_track(path: Path, frames: np.ndarray, times: np.ndarray, margin: float, fps: float) -> None:
    """The frames as `path`.mp4 (written to a temporary name, then renamed), then the JSON."""
    import os

    from .artifacts import atomic_write_json
    from .video import encode_video

    path = Path(path)
    video = path.with_suffix(".mp4")
    tmp = video.with_name(video.stem + ".tmp.mp4")
    encode_video(tmp, frames, fps=max(1.0, float(fps)), crf=18)
    os.replace(tmp, video)
    atomic_write_json(path, {"times": [round(float(t), 5) for t in times], "margin": float(margin),
                             "size": int(frames.shape[1]), "fps": float(fps)})


def read_track_info(path: str | Path) -> dict:
    import json

    with open(path) as f:
        return json.load(f)


def load_track(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, S, S, 3) uint8 RGB, times (N,) float64) of a track (its JSON's path)."""
    from .video import FrameReader

    path = Path(path)
    times = np.asarray(read_track_info(path)["times"], dtype=np.float64)
    frames = [f for _, f in FrameReader(path.with_suffix(".mp4"))]
    if not frames:
        raise ValueError(f"{path.with_suffix('.mp4')}: no frame could be decoded")
    n = min(len(frames), len(times))
    return np.stack(frames[:n]), times[:n]


def _process(task: Task) -> dict:
    from .audio import extract_audio

    p = task.payload
    work = WorkDir(p["work_dir"])
    boxes_path = work.boxes(p["boxes_from"])
    if not boxes_path.exists():
        raise FileNotFoundError(f"no boxes for {p['boxes_from']} (step 0 failed or was not run)")
    wav = audio_path(work, task.video)
    wav.parent.mkdir(parents=True, exist_ok=True)
    seconds = extract_audio(p["path"], wav)
    if seconds is None:
        raise SkipVideo("no audio track: the dissonance model abstains on this video")
    boxes = FaceBoxes.load(boxes_path)
    frames, times = face_track(p["path"], boxes, p["size"], p["margin"])
    out = track_path(work, task.video)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_track(out, frames, times, p["margin"], boxes.fps or 25.0)
    return {"audio_s": round(seconds, 2), "track_frames": len(frames)}


def extract_av(opts: StepOptions, size: int = DEFAULT_AV_SIZE, margin: float = DEFAULT_AV_MARGIN,
               dataset: Dataset | None = None) -> StepResult:
    """Write audio/{id}.wav and tracks/{id}.mp4 + .json for every video (see the module doc)."""
    from .crops import plan_boxes_source

    if size < 16:
        raise ValueError(f"--av-size must be >= 16, got {size}")
    if not 0 <= margin <= 2:
        raise ValueError(f"--av-margin must be in [0, 2], got {margin}")
    dataset = dataset or load_dataset(opts.data_dir)
    if not dataset.videos:
        raise StepError(f"no usable videos under {opts.data_dir}")
    work = opts.work
    if not (work.root / "boxes").is_dir():
        raise StepError(f"no boxes under {work.root / 'boxes'}: run 0_detect_faces.py first")
    tasks = []
    for v in dataset.videos:
        boxes_from, _, _ = plan_boxes_source(v, work)
        tasks.append(Task(v.id, v.group, {"path": str(v.path), "work_dir": str(work.root), "boxes_from": boxes_from,
                                          "size": int(size), "margin": float(margin)}))
    return run_tasks(STEP, tasks, _process, lambda t: track_path(work, t.video).exists(), opts)
