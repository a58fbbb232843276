"""The one module that owns the artifact paths and formats shared by every step.

WORK_DIR layout (see DESIGN.md):

    boxes/{id}.json                          step 0, FaceBoxes
    crops/{id}/{frame}_{face}.png            step 1, plus crops/{id}/crops.json (CropManifest)
    landmarks/{id}/{frame}_{face}.npy        step 2, float32 (5, 2) in crop pixels
    diffs/{fake_id}/{frame}_{face}_diff.png  step 3, uint8 gray (1 - SSIM) * 255
    folds.csv                                step 4
    {step}_errors.jsonl                      every step: the videos that failed, and why

A video's id is its path relative to DATA_DIR without extension, so ids contain '/'.
Every write is atomic (temp file or temp folder + rename): a killed run leaves no
half-written artifact, and "the artifact exists" means "this video is done".
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

FOLDS_COLUMNS = ["video", "file", "label", "original", "frame", "face", "fold"]
CROP_MANIFEST = "crops.json"


# --------------------------------------------------------------------------- atomic writes
def _tmp_sibling(path: Path) -> Path:
    # Hidden, unique, in the same folder so that os.replace is an atomic rename.
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False))


def encode_png(image: np.ndarray, rgb: bool = True) -> bytes:
    """PNG bytes of an RGB (or gray) uint8 image."""
    if image.ndim == 3 and rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise IOError("PNG encoding failed")
    return buf.tobytes()


def read_png(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """An RGB (or gray) uint8 image; raises FileNotFoundError/IOError with the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing image {path}")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        raise IOError(f"unreadable image {path}")
    return image if gray else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces `path` whole, on error it vanishes.

    Per-video outputs (crops, landmarks, diffs) are folders of many files; building them
    aside and renaming at the end makes "the folder exists" mean "the video is finished".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed run for this same video (a video belongs to one shard only).
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def boxes(self, video_id: str) -> Path:
        return self.root / "boxes" / f"{video_id}.json"

    def crops_dir(self, video_id: str) -> Path:
        return self.root / "crops" / video_id

    def crop(self, video_id: str, frame: int, face: int) -> Path:
        return self.crops_dir(video_id) / crop_name(frame, face)

    def crop_manifest(self, video_id: str) -> Path:
        return self.crops_dir(video_id) / CROP_MANIFEST

    def landmarks_dir(self, video_id: str) -> Path:
        return self.root / "landmarks" / video_id

    def landmarks(self, video_id: str, frame: int, face: int) -> Path:
        return self.landmarks_dir(video_id) / f"{frame}_{face}.npy"

    def diffs_dir(self, video_id: str) -> Path:
        return self.root / "diffs" / video_id

    def diff(self, video_id: str, frame: int, face: int) -> Path:
        return self.diffs_dir(video_id) / f"{frame}_{face}_diff.png"

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    def errors(self, step: str, part: int = 0, num_parts: int = 1) -> Path:
        suffix = "" if num_parts == 1 else f".part{part}of{num_parts}"
        return self.root / f"{step}_errors{suffix}.jsonl"


def crop_name(frame: int, face: int) -> str:
    return f"{frame}_{face}.png"


def clip_crop_name(anchor: int, face: int, offset: int) -> str:
    """The crop of frame anchor+offset cut with the anchor's box: '120_0_t3.png'. Named by
    its anchor, so the clips of neighbouring anchors never overwrite each other (a clip
    may be longer than the gap between detected frames)."""
    return f"{anchor}_{face}_t{offset}.png"


def parse_crop_name(name: str) -> tuple[int, int]:
    """'120_0.png' -> (120, 0); a clip crop '120_0_t3.png' -> its anchor's (120, 0)."""
    stem = name.rsplit(".", 1)[0]
    frame, face = stem.split("_")[:2]
    return int(frame), int(face)


# --------------------------------------------------------------------------- step 0: boxes
@dataclass
class FaceBoxes:
    """Faces found in one video: `frames[idx]` is a list of [x1, y1, x2, y2, prob]
    in full-resolution pixels. Only the frames later steps use are present."""

    width: int
    height: int
    fps: float
    num_frames: int
    frames: dict[int, list[list[float]]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "frames": {str(k): [[round(float(v), 2) for v in box] for box in boxes]
                       for k, boxes in sorted(self.frames.items())},
        }

    @classmethod
    def from_json(cls, obj: dict) -> "FaceBoxes":
        return cls(
            width=int(obj["width"]),
            height=int(obj["height"]),
            fps=float(obj["fps"]),
            num_frames=int(obj["num_frames"]),
            frames={int(k): [list(map(float, b)) for b in v] for k, v in obj["frames"].items()},
        )

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceBoxes":
        with open(path) as f:
            return cls.from_json(json.load(f))

    @property
    def num_faces(self) -> int:
        return sum(len(v) for v in self.frames.values())


# --------------------------------------------------------------------------- step 1: manifest
@dataclass
class CropManifest:
    """Written last into crops/{id}/: what the crops are and where their boxes came from.

    `boxes_from` is the id whose boxes were used: the original's for a paired FAKE, the
    video itself for a REAL or an unpaired ("orphan") FAKE, whose `reason` says why.
    `crops` are the detected frames' crops (the rows of folds.csv); `clip_crops` the
    following clip_len-1 frames of each, cut with the same rectangle and named by their
    anchor (`clip_crop_name`): sequence models, and re-encoding a clip as a video."""

    video: str
    label: str
    boxes_from: str
    paired: bool
    crops: list[str]
    margin: float
    reason: str | None = None
    clip_len: int = 1
    clip_crops: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.__dict__)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CropManifest":
        with open(path) as f:
            return cls(**json.load(f))


# --------------------------------------------------------------------------- errors
def write_errors(path: Path, entries: list[dict], finished_videos: set[str]) -> list[dict]:
    """Merge this run's failures into the step's errors file and return what it holds.

    The file lists the videos whose latest attempt failed (or finished with a warning,
    such as "no face"): entries of videos handled in this run are replaced by this
    run's, entries of videos this run skipped are kept.
    """
    old: list[dict] = []
    if path.exists():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        old.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    touched = finished_videos | {e.get("video") for e in entries}
    merged = [e for e in old if e.get("video") not in touched] + entries
    if merged or path.exists():
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in merged))
    return merged

