"""selim's "hardcore" augmentations: black out part of the face.

A detector that sees whole faces learns the easiest cue (often the eyes or the mouth
of one face-swap method) and stops there. Blacking out an eye band, the nose, the
mouth, or half of the face forces it to find evidence everywhere.

Every function is pure: it takes an RGB uint8 crop (H, W, 3) and returns a new image.

A blackout can erase all the manipulated pixels of a FAKE, which would then be a fake
with no visible manipulation: label noise. For fakes with a step-3 diff, `apply_hardcore`
keeps a blackout only if enough manipulated pixels remain visible (selim's rule).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import cv2
import numpy as np

LANDMARK_PARTS = ("eyes", "nose", "mouth")
HULL_HALVES = ("left", "right", "top", "bottom")
# A crop has a margin of 1/3 of the box side on every side (step 1), so the face box
# spans 0.2..0.8 of the crop: (1/3) / (1 + 2/3) = 0.2.
FACE_BOX_FRACTION = (0.2, 0.8)


# --------------------------------------------------------------------------- dlib landmarks
@lru_cache(maxsize=1)
def load_shape_predictor():
    """dlib's 68-point predictor (from face-recognition-models), loaded once per process
    (about 0.6 s, 100 MB); None with a warning when dlib or the model is missing, so that
    the augmentations fall back to the 5 MTCNN points."""
    try:
        import dlib

        from preprocessing.sample_data import shape_predictor_path

        return dlib.shape_predictor(str(shape_predictor_path()))
    except (ImportError, RuntimeError) as e:
        warnings.warn(f"dlib 68-point predictor unavailable ({e}); using MTCNN points only")
        return None


def face_landmarks68(img: np.ndarray, predictor=None) -> np.ndarray | None:
    """(68, 2) float32 dlib landmarks of the crop's face, or None.

    No detector is run: the face box is known from the crop geometry (its middle 60%).
    dlib's predictor always returns 68 points, so the result is rejected when it is
    implausible (a hull smaller than 5% of the crop or mostly outside it).
    """
    predictor = predictor or load_shape_predictor()
    if predictor is None:
        return None
    import dlib

    h, w = img.shape[:2]
    lo, hi = FACE_BOX_FRACTION
    rect = dlib.rectangle(int(lo * w), int(lo * h), int(hi * w), int(hi * h))
    shape = predictor(np.ascontiguousarray(img), rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    inside = ((points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)).mean()
    if inside < 0.8 or cv2.contourArea(cv2.convexHull(points)) < 0.05 * h * w:
        return None
    return points


# --------------------------------------------------------------------------- masks
def landmark_part_mask(shape: tuple[int, int], landmarks5: np.ndarray, part: str) -> np.ndarray:
    """bool (H, W): a thick band over one part of the face, sized by the eye distance.

    landmarks5 are MTCNN's points: left eye, right eye, nose, mouth left, mouth right.
    """
    if part not in LANDMARK_PARTS:
        raise ValueError(f"part must be one of {LANDMARK_PARTS}, got {part!r}")
    pts = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = pts
    eye_dist = max(float(np.linalg.norm(right_eye - left_eye)), 4.0)
    mouth_centre = (mouth_left + mouth_right) / 2
    if part == "eyes":
        # Round caps of a thick line cover each eye entirely.
        ends, thickness = (left_eye, right_eye), eye_dist * 0.5
    elif part == "nose":
        bridge = (left_eye + right_eye) / 2 * 0.6 + nose * 0.4
        tip = nose * 0.8 + mouth_centre * 0.2
        ends, thickness = (bridge, tip), eye_dist * 0.4
    else:
        ends, thickness = (mouth_left, mouth_right), eye_dist * 0.4
    mask = np.zeros(shape[:2], np.uint8)
    p1, p2 = (tuple(int(round(v)) for v in p) for p in ends)
    cv2.line(mask, p1, p2, 255, thickness=max(2, int(round(thickness))), lineType=cv2.LINE_8)
    return mask > 0


def hull_half_mask(shape: tuple[int, int], points: np.ndarray, half: str) -> np.ndarray:
    """bool (H, W): one half of the convex hull of `points`, cut by a vertical or a
    horizontal line through the hull's centre."""
    if half not in HULL_HALVES:
        raise ValueError(f"half must be one of {HULL_HALVES}, got {half!r}")
    h, w = shape[:2]
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    moments = cv2.moments(hull)
    if moments["m00"] > 0:
        cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    else:
        cx, cy = points[:, 0].mean(), points[:, 1].mean()
    cx, cy = int(round(cx)), int(round(cy))
    keep = np.zeros((h, w), bool)
    if half == "left":
        keep[:, :max(cx, 0)] = True
    elif half == "right":
        keep[:, max(cx, 0):] = True
    elif half == "top":
        keep[:max(cy, 0), :] = True
    else:
        keep[max(cy, 0):, :] = True
    return (mask > 0) & keep


def _blackout(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask] = 0
    return out


# --------------------------------------------------------------------------- augmentations
def blackout_landmark_part(img: np.ndarray, landmarks5: np.ndarray, rng: np.random.Generator,
                           part: str | None = None) -> np.ndarray:
    """Black out the eyes, the nose or the mouth (chosen by `rng` unless `part` is given)."""
    part = part or LANDMARK_PARTS[int(rng.integers(len(LANDMARK_PARTS)))]
    return _blackout(img, landmark_part_mask(img.shape, landmarks5, part))


def blackout_convex_hull_half(img: np.ndarray, rng: np.random.Generator, predictor=None,
                              half: str | None = None) -> np.ndarray:
    """Black out a random half (left/right/top/bottom) of the convex hull of dlib's 68
    landmarks; the image is returned unchanged when no plausible landmarks are found."""
    half = half or HULL_HALVES[int(rng.integers(len(HULL_HALVES)))]
    points = face_landmarks68(img, predictor)
    if points is None:
        return img.copy()
    return _blackout(img, hull_half_mask(img.shape, points, half))


def diff_mask(diff: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    """bool (H, W): the manipulated pixels of a fake, from its step-3 diff (uint8
    (1 - SSIM) * 255): those whose dissimilarity exceeds `threshold` (0..1; selim: 0.4)."""
    if diff.ndim == 3:
        diff = diff[..., 0]
    return diff > threshold * 255


def apply_hardcore(img: np.ndarray, label: float, landmarks5: np.ndarray | None, diff: np.ndarray | None,
                   rng: np.random.Generator, predictor=None, prob: float = 0.5, landmark_prob: float = 0.7,
                   min_manipulated_fraction: float = 0.02, threshold: float = 0.4, tries: int = 3,
                   return_mask: bool = False):
    """With probability `prob`, black out part of the face; returns the new image
    (and the bool mask of blacked-out pixels with `return_mask`).

    The blackout is a landmark part (probability `landmark_prob` when `landmarks5` is
    given) or half of the 68-landmark hull. A FAKE (label > 0.5) is blacked out only
    when it has a diff and at least `min_manipulated_fraction` of the crop stays
    manipulated afterwards; up to `tries` random blackouts are tried, then none.
    Fakes without a diff (unpaired) are left alone: nothing tells what would remain.
    """
    h, w = img.shape[:2]
    empty = np.zeros((h, w), bool)
    result = (img.copy(), empty)
    if rng.random() >= prob:
        return result if return_mask else result[0]
    is_fake = label > 0.5
    manipulated = None
    if is_fake:
        if diff is None:
            return result if return_mask else result[0]
        manipulated = diff_mask(diff, threshold)
        if manipulated.shape != (h, w):
            manipulated = cv2.resize(manipulated.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    points68 = None
    for _ in range(tries):
        if landmarks5 is not None and rng.random() < landmark_prob:
            part = LANDMARK_PARTS[int(rng.integers(len(LANDMARK_PARTS)))]
            mask = landmark_part_mask((h, w), landmarks5, part)
        else:
            half = HULL_HALVES[int(rng.integers(len(HULL_HALVES)))]
            if points68 is None:
                points68 = face_landmarks68(img, predictor)
            if points68 is None:
                continue
            mask = hull_half_mask((h, w), points68, half)
        if is_fake and (manipulated & ~mask).mean() < min_manipulated_fraction:
            continue  # it would hide the evidence that makes this crop a fake
        result = (_blackout(img, mask), mask)
        break
    return result if return_mask else result[0]
