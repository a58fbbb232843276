"""The lips' shape per frame, from dlib's 68 points: what the dissonance model's landmark
stream (`encoder: "lip_landmarks"`, `training.zoo.mds.LipStream`) reads in place of pixels.

A face crop of the dissonance tracks (step 1 --av, square, `margin` around the detector's
box) is enlarged to LANDMARK_SIZE px (dlib returns whole-pixel points: at 96 px an eye
distance of about 25 px would quantise the lips' opening to 4%), and dlib's predictor is
fitted in the face box the crop geometry gives (no detector run: `face_box_fraction`).
Each frame becomes NUM_LIP_FEATURES numbers, free of the face's size, place and roll:

- the 20 lip points (48-67) relative to their mean, turned so that the eyes lie level and
  divided by the distance between the eyes' centres (40 numbers, x then y per point);
- the outer lips' opening (`lip_opening`: 50-58, 51-57, 52-56), the inner one (61-67,
  62-66, 63-65), the mouth's width (48-54) and the chin's drop (nose tip 33 to chin 8),
  each over the eyes' distance.

A frame where dlib's fit is implausible (`face_landmarks68`'s check) takes the features
of the nearest earlier frame that has them (the first such frame's, before it); a track
without any is all zeros.

Beyond the paper (its visual stream is r3d_18 on face pixels). On the little speech a
laptop trains on, the opening of the lips followed against loudness separates synced
from shifted sound on GRID at AUC 0.98-1.00 without learning (bench/dissonance
`baseline_lips_auc_shifted`), while a network learning from pixels reaches 0.75-0.93.
"""
from __future__ import annotations

import cv2
import numpy as np

LANDMARK_SIZE = 192
NUM_LIP_FEATURES = 44
OUTER_OPENING = 40  # the outer lips' opening's column in lip_features (`lip_opening`)
LIPS = slice(48, 68)


def face_box_fraction(margin: float) -> tuple[float, float]:
    """(lo, hi): the detector's box within a square crop cut with `margin` on every side
    (side (1 + 2 margin) x the box's), as fractions of the crop's side."""
    half = 0.5 / (1.0 + 2.0 * float(margin))
    return 0.5 - half, 0.5 + half


def _eyes(points: np.ndarray) -> np.ndarray:
    """(2,) the vector from the right eye's centre (36-41) to the left one's (42-47)."""
    return points[42:48].mean(0) - points[36:42].mean(0)


def _gap(points: np.ndarray, upper: list[int], lower: list[int]) -> float:
    return float(np.linalg.norm(points[upper] - points[lower], axis=1).mean())


def lip_opening(points: np.ndarray) -> float:
    """The outer lips' opening of dlib's 68 points (the mean of the distances 50-58, 51-57 and
    52-56) over the distance between the eyes' centres (36-41, 42-47): 0 when the eyes meet."""
    points = np.asarray(points, dtype=np.float64)
    eyes = float(np.linalg.norm(_eyes(points)))
    return _gap(points, [50, 51, 52], [58, 57, 56]) / eyes if eyes > 0 else 0.0


def lip_features(points: np.ndarray) -> np.ndarray | None:
    """(NUM_LIP_FEATURES,) float32 of one frame's 68 points (see the module's docstring);
    None when the eyes coincide (no scale to measure by)."""
    points = np.asarray(points, dtype=np.float64)
    eyes = _eyes(points)
    scale = float(np.linalg.norm(eyes))
    if scale <= 0:
        return None
    cos, sin = eyes / scale
    level = np.array([[cos, -sin], [sin, cos]])  # rows @ level: the eyes' line turned to +x
    lips = (points[LIPS] - points[LIPS].mean(0)) @ level / scale
    shape = [_gap(points, [50, 51, 52], [58, 57, 56]), _gap(points, [61, 62, 63], [67, 66, 65]),
             float(np.linalg.norm(points[54] - points[48])), float(np.linalg.norm(points[8] - points[33]))]
    return np.concatenate([lips.reshape(-1), np.asarray(shape) / scale]).astype(np.float32)


def crop_landmarks(crop: np.ndarray, margin: float, predictor=None) -> np.ndarray | None:
    """(68, 2) dlib points of a square RGB face crop cut with `margin`, in the coordinates of
    the crop enlarged to LANDMARK_SIZE (smaller crops are enlarged, larger ones kept); None
    when the fit is implausible."""
    from .augmentations import face_landmarks68

    if crop.shape[0] < LANDMARK_SIZE:
        crop = cv2.resize(crop, (round(LANDMARK_SIZE * crop.shape[1] / crop.shape[0]), LANDMARK_SIZE),
                          interpolation=cv2.INTER_CUBIC)
    return face_landmarks68(crop, predictor, box=face_box_fraction(margin))


def required_predictor():
    """dlib's 68-point predictor, or a clear error: the landmark stream cannot run without it."""
    from .augmentations import load_shape_predictor

    predictor = load_shape_predictor()
    if predictor is None:
        raise RuntimeError("the lip-landmark stream needs dlib's 68-point predictor (dlib-bin and "
                           "face-recognition-models, pinned in requirements.txt)")
    return predictor


def crops_lip_features(crops, margin: float, predictor=None) -> tuple[np.ndarray, int]:
    """((n, NUM_LIP_FEATURES) float32, frames fitted) of n consecutive face crops; a frame
    without a plausible fit repeats the nearest earlier one's features (the first fitted
    frame's before it), all zeros when none fits."""
    predictor = predictor or required_predictor()
    rows = []
    for crop in crops:
        points = crop_landmarks(np.asarray(crop), margin, predictor)
        rows.append(None if points is None else lip_features(points))
    found = [i for i, r in enumerate(rows) if r is not None]
    out = np.zeros((len(rows), NUM_LIP_FEATURES), np.float32)
    if found:
        last = rows[found[0]]
        for i, r in enumerate(rows):
            last = r if r is not None else last
            out[i] = last
    return out, len(found)
