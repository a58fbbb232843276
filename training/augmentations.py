"""selim's "hardcore" augmentations: black out part of the face.

A detector that sees whole faces learns the easiest cue (often the eyes or the mouth
of one face-swap method) and stops there. Blacking out an eye band, the nose, the
mouth, or half of the face forces it to find evidence everywhere.

`apply_hardcore` follows the cascade of selim's DFDC winner
(`training/datasets/classifier_dataset.py`), run in training only on the raw crop,
before the albumentations, for REAL and FAKE crops alike:

    if landmarks5 is given and random() < 0.7:   one landmark part (`LANDMARK_PROB`)
        eyes 1/2, mouth 1/4, nose 1/8, nothing 1/8 (his nested `random() > 0.5`)
    elif random() < 0.2:                         half of the 68-landmark face outline (`HULL_PROB`)
    elif random() < 0.1:                         one of 6 bit masks over the crop (`BIT_MASK_PROB`)

So with landmarks: part 0.7, hull 0.06, bit mask 0.024, none 0.216; without: hull 0.2,
bit mask 0.08, none 0.72.

- A landmark part is a `cv2.line` of thickness 2 dilated N times with a 3x3 cross
  (= scipy `binary_dilation`'s default structure): eyes, the line between the eyes with
  N = eye_dist // 4; mouth, between the mouth corners with N = mouth_width // 3; nose,
  from the nose to the midpoint of the eyes with N = eye_dist // 4. The band is
  2N + 3 px thick.
- The hull half: the polygon of dlib's jaw (points 0-16) and eyebrows (26..17), cut at
  its centroid horizontally or vertically (1/2 each), one side (1/2 each) zeroed.
- The bit masks zero the top, bottom, left or right half of the crop, or its TL+BR or
  its TR+BL quadrants.

Departures from selim, on purpose:

- Label neutrality. Whether a crop is blacked out, and by which branch, is drawn
  independently of its label and of its diff, so a blackout can never be a cue for
  "real". selim's bit-mask branch applies a mask to a FAKE only if some manipulated
  pixels stay visible (count_nonzero(diff * keep) > 20, with up to 5 random tries), so
  a fake without a diff, or whose masks would all hide the evidence, is never masked
  while a real one always is. Here the diff only steers WHICH mask is used: the six
  masks are visited in a random order and a fake takes the first that keeps > 20
  manipulated diff pixels; if none does, or there is no diff, it takes the first one,
  like a real crop. The rng is consumed identically whatever the label, so one seed
  gives the same branch (and the same later random draws) for a real and a fake.
- The height midpoint of the bit masks is h // 2 (his code uses w // 2 for both).
- dlib's 68 points are fitted in the known face box of the crop (`face_landmarks68`)
  instead of running dlib's face detector; no plausible face -> the image is unchanged.
- A part whose N would be 0 (a face under 4 px) is the bare line: scipy's
  `binary_dilation(iterations=0)` would dilate until nothing changes, i.e. black out
  the whole crop.

Every function is pure: it takes an RGB uint8 crop (H, W, 3) and returns a new image;
all randomness comes from the numpy Generator passed in.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import cv2
import numpy as np

LANDMARK_PARTS = ("eyes", "nose", "mouth")
HULL_HALVES = ("left", "right", "top", "bottom")
# The region each bit mask blacks out, in selim's order.
BIT_MASKS = ("top", "bottom", "left", "right", "tl_br", "tr_bl")
LANDMARK_PROB = 0.7   # P(landmark part) when the 5 MTCNN points exist
HULL_PROB = 0.2       # P(hull half) when not a landmark part
BIT_MASK_PROB = 0.1   # P(bit mask) when neither
BIT_MASK_MIN_VISIBLE = 20  # a fake's mask should leave more nonzero diff pixels than this
# The outline polygon of dlib's 68 points: the jaw, then the eyebrows from right to left.
FACE_OUTLINE = np.array([*range(17), *range(26, 16, -1)])
# A crop has a margin of 1/3 of the box side on every side (step 1), so the face box
# spans 0.2..0.8 of the crop: (1/3) / (1 + 2/3) = 0.2.
FACE_BOX_FRACTION = (0.2, 0.8)
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


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


def face_landmarks68(img: np.ndarray, predictor=None,
                     box: tuple[float, float] = FACE_BOX_FRACTION) -> np.ndarray | None:
    """(68, 2) float32 dlib landmarks of the crop's face, or None.

    No detector is run: the face box is known from the crop geometry, `box` (lo, hi) of
    its side (step 1's crops: the middle 60%; `training.lips.face_box_fraction` for others).
    dlib's predictor always returns 68 points, so the result is rejected when it is
    implausible (a hull smaller than 5% of the crop or mostly outside it).
    """
    predictor = predictor or load_shape_predictor()
    if predictor is None:
        return None
    import dlib

    h, w = img.shape[:2]
    lo, hi = box
    rect = dlib.rectangle(int(lo * w), int(lo * h), int(hi * w), int(hi * h))
    shape = predictor(np.ascontiguousarray(img), rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    inside = ((points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)).mean()
    if inside < 0.8 or cv2.contourArea(cv2.convexHull(points)) < 0.05 * h * w:
        return None
    return points


# --------------------------------------------------------------------------- masks
def _point(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def landmark_part_mask(shape: tuple[int, int], landmarks5: np.ndarray, part: str) -> np.ndarray:
    """bool (H, W): selim's band over one part of the face (see the module docstring).

    landmarks5 are MTCNN's points: left eye, right eye, nose, mouth left, mouth right.
    """
    if part not in LANDMARK_PARTS:
        raise ValueError(f"part must be one of {LANDMARK_PARTS}, got {part!r}")
    pts = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = pts
    eye_dist = float(np.linalg.norm(right_eye - left_eye))
    if part == "eyes":
        ends, iterations = (left_eye, right_eye), int(eye_dist // 4)
    elif part == "nose":
        ends, iterations = (nose, (left_eye + right_eye) / 2), int(eye_dist // 4)
    else:
        mouth_width = float(np.linalg.norm(mouth_right - mouth_left))
        ends, iterations = (mouth_left, mouth_right), int(mouth_width // 3)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.line(mask, _point(ends[0]), _point(ends[1]), 1, thickness=2)
    if iterations > 0:
        mask = cv2.dilate(mask, _CROSS, iterations=iterations)
    return mask > 0


def hull_half_mask(shape: tuple[int, int], points: np.ndarray, half: str) -> np.ndarray:
    """bool (H, W): the `half` (left/right/top/bottom) of the face polygon, cut by a
    vertical or a horizontal line through the polygon's pixel centroid.

    With 68 dlib points the polygon is selim's outline (jaw + eyebrows, `FACE_OUTLINE`);
    any other point set is used through its convex hull.
    """
    if half not in HULL_HALVES:
        raise ValueError(f"half must be one of {HULL_HALVES}, got {half!r}")
    h, w = shape[:2]
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    polygon = points[FACE_OUTLINE] if len(points) == 68 else cv2.convexHull(points).reshape(-1, 2)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask > 0
    cy, cx = int(ys.mean()), int(xs.mean())   # skimage.measure.centroid, truncated like selim
    if half == "left":
        mask[:, cx:] = 0
    elif half == "right":
        mask[:, :cx] = 0
    elif half == "top":
        mask[cy:, :] = 0
    else:
        mask[:cy, :] = 0
    return mask > 0


def bit_masks(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The 6 bool (H, W) regions of selim's bit-mask branch, by `BIT_MASKS` name: the top,
    bottom, left or right half of the crop, or two opposite quadrants. True = blacked out.
    The halves split at h // 2 and w // 2 (selim: w // 2 for both, a bug)."""
    h, w = shape[:2]
    mid_h, mid_w = h // 2, w // 2
    rows = np.arange(h)[:, None] < mid_h   # (H, 1) top
    cols = np.arange(w)[None, :] < mid_w   # (1, W) left
    top, left = np.broadcast_to(rows, (h, w)), np.broadcast_to(cols, (h, w))
    return {"top": top.copy(), "bottom": ~top, "left": left.copy(), "right": ~left,
            "tl_br": top == left, "tr_bl": top != left}


def _blackout(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask] = 0
    return out


# --------------------------------------------------------------------------- random choices
def choose_landmark_part(rng: np.random.Generator) -> str | None:
    """selim's `remove_landmark`: eyes 1/2, mouth 1/4, nose 1/8, None (nothing) 1/8."""
    for part in ("eyes", "mouth", "nose"):
        if rng.random() > 0.5:
            return part
    return None


def choose_hull_half(rng: np.random.Generator) -> str:
    """selim's `blackout_convex_hull`: `first`, then horizontal vs vertical cut (1/2 each)."""
    first = rng.random() > 0.5
    if rng.random() > 0.5:                       # horizontal cut: `first` zeroes the rows above
        return "bottom" if first else "top"
    return "right" if first else "left"          # vertical cut: `first` zeroes the columns left


def choose_bit_mask(shape: tuple[int, int], label: float, diff: np.ndarray | None,
                    rng: np.random.Generator) -> str:
    """The name of the bit mask to apply. The six are visited in a random order (one rng
    draw whatever the label); a FAKE with a diff takes the first that leaves more than
    `BIT_MASK_MIN_VISIBLE` nonzero diff pixels visible, any other crop, or a fake for
    which no mask does, the first one."""
    order = rng.permutation(len(BIT_MASKS))
    if label > 0.5 and diff is not None:
        visible = _as_2d(diff, shape) > 0
        masks = bit_masks(shape)
        for i in order:
            if np.count_nonzero(visible & ~masks[BIT_MASKS[i]]) > BIT_MASK_MIN_VISIBLE:
                return BIT_MASKS[i]
    return BIT_MASKS[order[0]]


def _as_2d(diff: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The diff as (H, W) of the crop (its first channel; nearest-neighbour resized)."""
    if diff.ndim == 3:
        diff = diff[..., 0]
    h, w = shape[:2]
    if diff.shape != (h, w):
        diff = cv2.resize(diff, (w, h), interpolation=cv2.INTER_NEAREST)
    return diff


# --------------------------------------------------------------------------- augmentations
def blackout_landmark_part(img: np.ndarray, landmarks5: np.ndarray, rng: np.random.Generator,
                           part: str | None = None) -> np.ndarray:
    """Black out the eyes, the mouth or the nose; with `part=None` it is drawn as selim
    does (`choose_landmark_part`), which leaves the image unchanged 1 time in 8."""
    part = part or choose_landmark_part(rng)
    if part is None:
        return img.copy()
    return _blackout(img, landmark_part_mask(img.shape, landmarks5, part))


def blackout_convex_hull_half(img: np.ndarray, rng: np.random.Generator, predictor=None,
                              half: str | None = None) -> np.ndarray:
    """Black out a random half (left/right/top/bottom) of the face outline of dlib's 68
    landmarks; the image is returned unchanged when no plausible landmarks are found."""
    half = half or choose_hull_half(rng)
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
                   rng: np.random.Generator, predictor=None, return_mask: bool = False,
                   return_branch: bool = False):
    """selim's hardcore cascade (module docstring): returns the new image, then, if asked,
    the bool (H, W) mask of blacked-out pixels (`return_mask`) and the (branch, choice)
    drawn (`return_branch`): ("none", None), ("landmark", part or None),
    ("hull", half) or ("bitmask", name). The branch is reported even when it changed
    nothing (no part drawn, no plausible dlib face).

    The branch never depends on `label` or `diff`; a FAKE's diff (uint8 (1 - SSIM) * 255)
    only chooses which bit mask is used.
    """
    h, w = img.shape[:2]
    mask = None
    if landmarks5 is not None and rng.random() < LANDMARK_PROB:
        choice = choose_landmark_part(rng)
        branch = "landmark"
        if choice is not None:
            mask = landmark_part_mask((h, w), landmarks5, choice)
    elif rng.random() < HULL_PROB:
        branch, choice = "hull", choose_hull_half(rng)
        points = face_landmarks68(img, predictor)
        if points is not None:
            mask = hull_half_mask((h, w), points, choice)
    elif rng.random() < BIT_MASK_PROB:
        branch, choice = "bitmask", choose_bit_mask((h, w), label, diff, rng)
        mask = bit_masks((h, w))[choice]
    else:
        branch, choice = "none", None
    if mask is None:
        mask = np.zeros((h, w), bool)
    out = [_blackout(img, mask) if mask.any() else img.copy()]
    if return_mask:
        out.append(mask)
    if return_branch:
        out.append((branch, choice))
    return out[0] if len(out) == 1 else tuple(out)
