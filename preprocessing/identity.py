"""Who is in a video: dlib face descriptors of its crops, and originals grouped by person.

DFDC filmed each actor in many originals, so splitting folds by original still lets a
person seen in training reappear in validation. As selim (1st place) did, originals
whose faces are closer than a threshold (0.5 between 128-d dlib descriptors, stricter
than dlib's 0.6, see DEFAULT_THRESHOLD) count as the same person, transitively, and
share a fold.

A descriptor needs no face detector: the crop's face box is known from its margin
(step 1 grows the box by `margin` of its side on every side), so dlib's 68-point
predictor runs inside that box and the ResNet embeds the aligned face.

Cache: WORK_DIR/face_descriptors/{id}.npy, float32 (n, 129), one row per crop used:
the face index, then the 128-d descriptor. Recomputed when crops.json is newer.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from .progress import progress_bar

from .artifacts import CropManifest, WorkDir, atomic_write_bytes, parse_crop_name, read_png
from .sample_data import shape_predictor_path

# dlib's own threshold is 0.6 (99.38% on LFW), but single linkage chains through it on
# video crops: on train-videos (low-resolution screen captures) 0.6 put 133 of 180 videos
# in one group, 0.5 gives 95 groups, the largest 15; on dev-videos 0.6 linked three pairs
# of different people at 0.525-0.598.
DEFAULT_THRESHOLD = 0.5
CROPS_PER_FACE = 5        # spread over the video, per face index
DESCRIPTORS_DIR = "face_descriptors"


def recognition_model_path() -> Path:
    """dlib's face recognition ResNet, shipped next to the 68-point model."""
    path = shape_predictor_path().with_name("dlib_face_recognition_resnet_model_v1.dat")
    if not path.exists():
        raise RuntimeError(f"dlib face recognition model not found at {path}")
    return path


@lru_cache(maxsize=1)
def _models():
    import dlib

    return dlib.shape_predictor(str(shape_predictor_path())), dlib.face_recognition_model_v1(str(recognition_model_path()))


def descriptor_path(work_dir: str | os.PathLike, video_id: str) -> Path:
    return Path(work_dir) / DESCRIPTORS_DIR / f"{video_id}.npy"


def face_box_in_crop(shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the detected face inside a crop cut with `margin` per side."""
    h, w = shape[:2]
    lo, hi = margin / (1 + 2 * margin), (1 + margin) / (1 + 2 * margin)
    return int(lo * w), int(lo * h), int(round(hi * w)), int(round(hi * h))


def face_descriptor(img: np.ndarray, margin: float) -> np.ndarray | None:
    """128-d float32 dlib descriptor of the face in an RGB crop, or None when the
    landmarks are implausible (mostly outside the crop, or a tiny hull)."""
    import dlib

    predictor, recognizer = _models()
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    shape = predictor(img, dlib.rectangle(*face_box_in_crop(img.shape, margin)))
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    inside = ((points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)).mean()
    if inside < 0.8 or cv2.contourArea(cv2.convexHull(points)) < 0.05 * h * w:
        return None
    return np.asarray(recognizer.compute_face_descriptor(img, shape), dtype=np.float32)


def pick_crops(names: list[str], per_face: int = CROPS_PER_FACE) -> list[str]:
    """Up to `per_face` crops of each face index, spread evenly over the video.

    A face index seen in fewer than half as many frames as the video's main face is
    left out: a passing or spurious detection (a face on a poster or a TV screen) would
    otherwise link the video to a stranger."""
    by_face: dict[int, list[tuple[int, str]]] = {}
    for name in names:
        frame, face = parse_crop_name(name)
        by_face.setdefault(face, []).append((frame, name))
    most = max((len(v) for v in by_face.values()), default=0)
    picked = []
    for face in sorted(by_face):
        if 2 * len(by_face[face]) < most:
            continue
        crops = [n for _, n in sorted(by_face[face])]
        idx = np.unique(np.linspace(0, len(crops) - 1, min(per_face, len(crops))).round().astype(int))
        picked += [crops[i] for i in idx]
    return picked


def video_descriptors(work_dir: str | os.PathLike, video_id: str, per_face: int = CROPS_PER_FACE) -> np.ndarray:
    """(n, 129) float32 rows [face index, descriptor] of a video's picked crops.
    Raises ValueError (with the reason) when no crop gives a descriptor."""
    work = WorkDir(work_dir)
    m = CropManifest.load(work.crop_manifest(video_id))
    rows, problems = [], []
    for name in pick_crops(m.crops, per_face):
        try:
            d = face_descriptor(read_png(work.crops_dir(video_id) / name), m.margin)
        except (IOError, ValueError, RuntimeError) as e:  # unreadable PNG, or dlib refusing the image
            problems.append(str(e))
            continue
        if d is None:
            problems.append(f"{name}: implausible landmarks")
            continue
        rows.append(np.concatenate([[parse_crop_name(name)[1]], d]).astype(np.float32))
    if not rows:
        raise ValueError("no face descriptor from any crop" + (f" ({problems[0]})" if problems else ""))
    return np.stack(rows)


def _cached_or_computed(work_dir: str, video_id: str, force: bool) -> tuple[str, np.ndarray | None, str | None]:
    """(video, rows or None, why not): the cache when it is newer than the crops."""
    cache = descriptor_path(work_dir, video_id)
    try:
        manifest_time = WorkDir(work_dir).crop_manifest(video_id).stat().st_mtime_ns
        if not force and cache.exists() and cache.stat().st_mtime_ns >= manifest_time:
            try:
                return video_id, np.load(cache), None
            except (OSError, ValueError, EOFError):  # unreadable cache: recompute it
                pass
        rows = video_descriptors(work_dir, video_id)
    except Exception as e:  # one bad video falls back to its own group
        return video_id, None, f"{type(e).__name__}: {e}"
    buf = io.BytesIO()
    np.save(buf, rows)
    atomic_write_bytes(cache, buf.getvalue())
    return video_id, rows, None


def compute_descriptors(work_dir: str | os.PathLike, video_ids: list[str], force: bool = False,
                        workers: int = 1, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Descriptors of each video (from the cache where fresh) and, for the videos that
    have none, the reason. About 0.1 s per crop on one CPU core."""
    work_dir = str(work_dir)
    found, failed = {}, {}
    bar = progress_bar(total=len(video_ids), desc="face descriptors", unit="video",
                       disable=not progress or not video_ids)

    def record(video_id, rows, error):
        if rows is None:
            failed[video_id] = error
        else:
            found[video_id] = rows
        bar.update(1)

    if workers == 1 or len(video_ids) <= 1:
        for v in video_ids:
            record(*_cached_or_computed(work_dir, v, force))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for result in pool.map(_cached_or_computed, [work_dir] * len(video_ids), video_ids,
                                   [force] * len(video_ids), chunksize=4):
                record(*result)
    bar.close()
    return found, failed


def identity_groups(descriptors: dict[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD) -> dict[str, str]:
    """video -> identity group: the smallest video id of its group.

    Each face index of a video is one point (the mean of its descriptors, steadier than
    any single frame). Points closer than `threshold` are the same person, transitively
    (single linkage: DBSCAN with min_samples=1), and videos sharing a person share a
    group, so a video showing two people joins both people's videos.
    """
    if threshold <= 0:
        raise ValueError(f"--identity-threshold must be > 0, got {threshold}")
    videos = sorted(descriptors)
    points, owner = [], []
    for i, v in enumerate(videos):
        rows = np.asarray(descriptors[v], dtype=np.float32)
        for face in np.unique(rows[:, 0]):
            points.append(rows[rows[:, 0] == face, 1:].mean(axis=0))
            owner.append(i)
    if not points:
        return {}
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.cluster import DBSCAN

    people = DBSCAN(eps=threshold, min_samples=1).fit_predict(np.stack(points))
    # A bipartite graph video - person: its components are the groups of videos.
    n = len(videos)
    graph = coo_matrix((np.ones(len(owner)), (owner, n + people)), shape=(n + people.max() + 1,) * 2)
    _, component = connected_components(graph, directed=False)
    first: dict[int, str] = {}
    for i, v in enumerate(videos):  # sorted, so the first member is the smallest id
        first.setdefault(component[i], v)
    return {v: first[component[i]] for i, v in enumerate(videos)}
