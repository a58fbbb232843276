"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022), written from the paper.

A fake is made from a single REAL crop: a slightly altered copy of the face (colour
jitter, a resampling artefact, a small scale/shift) is blended back onto the crop
through a soft face mask. The result carries the generic traces of face swapping
(a blending boundary, colour and frequency mismatch, a small misalignment) and no
method-specific fingerprint, so a model trained on it generalises to unseen
manipulations; and a dataset of REAL videos alone can train a detector.

Beyond the paper (README, departures): `regions` can also blend only the LOWER face
(jaw line and nose up) or only the MOUTH, with a stronger down-and-up resampling: the
traces of lip-sync methods (Wav2Lip, video-retalking, HyperLips regenerate the mouth at a
lower resolution and paste it back), which a whole-face blend does not simulate.

Two styles (`data.sbi_style`):
- "official" (the default): the generator of the authors' code (mapooon/SelfBlendedImages,
  `src/utils/sbi.py`, `blend.py`, `funcs.py`): the source gets RGBShift (+-20, p 0.3),
  a near-zero HueSaturationValue and RandomBrightnessContrast (+-0.1) and then one of a
  2x/4x resampling (nearest down, bilinear up) or albumentations' Sharpen; the source
  and the hull mask move together by Affine (x +-3%, y +-1.5%, scale 0.95..1/0.95 per
  axis), the mask is then deformed by ElasticTransform (alpha 50, sigma 7); the mask is
  resized to 192..256 px, blurred (5..25 px, on uint8, which rounds), cut to where that
  blur is 1, blurred again (5..25 px, sigma 5..45) and resized back (`get_blend_mask`).
- "legacy": this project's first generator (the default until 2026-12-05), written from
  the paper before the code was read (colour jitter, a 0.5..0.9 area resampling or an unsharp mask, a 3% shift and 5%
  scale of the source alone, the mask eroded or dilated and blurred by 1-5% of the side).
`self_blend_pair` makes a REAL and its FAKE for one training pair, as their dataset does
(`data.sbi_pairs`: the two sit in the same batch with the same augmentation), altering
the source or, half the time, the target, which is then the pair's REAL; `self_blend`
(unpaired) always alters the source, since an altered REAL alone would only teach that
colour shifts are real. The README lists where "official" still departs from their code.

Everything random comes from the `rng` argument: the same seed gives the same fake.
"""
from __future__ import annotations

import threading

import albumentations as A
import cv2
import numpy as np

from .augmentations import face_landmarks68

# The paper draws the blend ratio from these values; 1 (a full swap) is the most common.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
REGIONS = ("face", "lower", "mouth")
STYLES = ("official", "legacy")


def _jitter_colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast, hue/saturation and a per-channel RGB shift."""
    x = img.astype(np.float32)
    contrast = 1.0 + rng.uniform(-0.1, 0.1)
    brightness = rng.uniform(-0.1, 0.1) * 255
    x = (x - x.mean()) * contrast + x.mean() + brightness
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180   # OpenCV hue is 0..180
    hsv[..., 1] *= 1.0 + rng.uniform(-0.15, 0.15)
    x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.5:
        x += rng.uniform(-20, 20, size=3).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def _frequency_artifact(img: np.ndarray, rng: np.random.Generator, strong: bool = False) -> np.ndarray:
    """A down-and-up resampling (blur) or a sharpening: the swapped face of most
    methods went through a generator or a warp at another resolution. `strong` (a
    lip-sync region): resampling more often and down to a quarter (Wav2Lip draws the
    whole face at 96 px)."""
    h, w = img.shape[:2]
    if rng.random() < (0.75 if strong else 0.5):
        f = rng.uniform(0.25, 0.7) if strong else rng.uniform(0.5, 0.9)
        small = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    amount = rng.uniform(0.2, 0.6)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
    return cv2.addWeighted(img, 1 + amount, blurred, -amount, 0)


def _shift_scale(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale 0.95..1.05 about the centre and translate up to 3% of the size; borders
    are reflected so that no black enters the blend."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _face_region(shape: tuple[int, int], img: np.ndarray, landmarks5: np.ndarray | None, predictor) -> np.ndarray:
    """uint8 {0, 255} (H, W): dlib's 68-point convex hull; else an ellipse around the
    5 MTCNN points; else an ellipse in the crop's centre (where step 1 put the face)."""
    points = face_landmarks68(img, predictor)
    if points is None:
        return _face_ellipse(shape, landmarks5)
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 255)
    return mask


def _face_ellipse(shape: tuple[int, int], landmarks5: np.ndarray | None) -> np.ndarray:
    """uint8 {0, 255} (H, W): an ellipse around the 5 MTCNN points, or without them one in
    the crop's centre (where step 1 put the face)."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    if landmarks5 is not None:
        pts = np.asarray(landmarks5, np.float32).reshape(5, 2)
        eye_dist = max(float(np.linalg.norm(pts[1] - pts[0])), 4.0)
        centre = pts.mean(axis=0)
        axes = (eye_dist * 1.1, eye_dist * 1.4)   # a face is about 2.2 x 2.8 eye distances
        angle = np.degrees(np.arctan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0]))
    else:
        centre, axes, angle = (w / 2, h / 2), (0.3 * w, 0.35 * h), 0.0
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), float(angle), 0, 360, 255, -1)
    return mask


def _sub_region(shape: tuple[int, int], img: np.ndarray, landmarks5: np.ndarray | None, predictor,
                region: str) -> np.ndarray:
    """uint8 {0, 255} (H, W) of the LOWER face (jaw from cheek to cheek, up to the nose
    bridge's end) or the MOUTH (its hull grown by a third of its width): from dlib's 68
    points; else ellipses on the 5 MTCNN points; else on the crop's centre."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    points = face_landmarks68(img, predictor)
    if points is not None:
        if region == "lower":
            hull = cv2.convexHull(np.round(np.concatenate([points[2:15], points[29:36]])).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 255)
        else:
            mouth = points[48:68]
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(mouth).astype(np.int32)), 255)
            grow = max(1, int(round((mouth[:, 0].max() - mouth[:, 0].min()) / 3)))
            mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        return mask
    if landmarks5 is not None:
        pts = np.asarray(landmarks5, np.float32).reshape(5, 2)
        mouth_c, nose = (pts[3] + pts[4]) / 2, pts[2]
        mouth_w = max(float(np.linalg.norm(pts[4] - pts[3])), 4.0)
        eye_dist = max(float(np.linalg.norm(pts[1] - pts[0])), 4.0)
        angle = np.degrees(np.arctan2(pts[4, 1] - pts[3, 1], pts[4, 0] - pts[3, 0]))
        if region == "lower":
            centre = mouth_c + 0.35 * (mouth_c - nose)
            axes = (eye_dist * 1.1, max(float(np.linalg.norm(mouth_c - nose)), 2.0) * 1.7)
        else:
            centre, axes = mouth_c, (mouth_w * 0.85, mouth_w * 0.5)
    else:
        centre, angle = ((w / 2, 0.72 * h), 0.0) if region == "lower" else ((w / 2, 0.68 * h), 0.0)
        axes = (0.3 * w, 0.2 * h) if region == "lower" else (0.14 * w, 0.08 * h)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), float(angle), 0, 360, 255, -1)
    return mask


def _region_mask(shape, img, landmarks5, predictor, region: str) -> np.ndarray:
    if region == "face":
        return _face_region(shape, img, landmarks5, predictor)
    return _sub_region(shape, img, landmarks5, predictor, region)


def pick_region(regions: dict | None, rng: np.random.Generator) -> str:
    """A region name drawn with the given weights; None or {} is the paper's whole face
    (and draws nothing from rng)."""
    if not regions:
        return "face"
    names = [k for k in REGIONS if regions.get(k, 0) > 0]
    weights = np.array([float(regions[k]) for k in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def blend_mask(img: np.ndarray, landmarks5: np.ndarray | None, rng: np.random.Generator,
               predictor=None, region: str = "face") -> np.ndarray:
    """float32 (H, W) in [0, 1]: the region (`REGIONS`), randomly eroded or dilated,
    blurred into a soft edge of random width, and scaled by a random blend ratio."""
    h, w = img.shape[:2]
    region_mask = _region_mask((h, w), img, landmarks5, predictor, region)
    side = min(h, w)
    k = int(rng.integers(1, max(2, side // (15 if region == "face" else 40)) + 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    mask = cv2.erode(region_mask, kernel) if rng.random() < 0.5 else cv2.dilate(region_mask, kernel)
    if not mask.any():  # eroded away on a tiny face: the region as it was (no second landmark search)
        mask = region_mask
    soft = mask.astype(np.float32) / 255.0
    sigma = rng.uniform(0.01, 0.05) * side * (1.0 if region == "face" else 0.5)
    soft = cv2.GaussianBlur(soft, (0, 0), sigma)
    soft /= max(float(soft.max()), 1e-6)
    ratio = BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))]
    return np.clip(soft * ratio, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ the authors' generator
_OFFICIAL = threading.local()  # per thread: a pipeline is reseeded, then called


def _seeded(name: str, build) -> A.Compose:
    """An albumentations pipeline built once per process and thread, reseeded from `rng` per call."""
    cache = _OFFICIAL.__dict__
    if name not in cache:
        cache[name] = build()
    return cache[name]


def _official_colour() -> A.Compose:
    return A.Compose([
        A.RGBShift(r_shift_limit=(-20, 20), g_shift_limit=(-20, 20), b_shift_limit=(-20, 20), p=0.3),
        A.HueSaturationValue(hue_shift_limit=(-0.3, 0.3), sat_shift_limit=(-0.3, 0.3), val_shift_limit=(-0.3, 0.3),
                             p=1.0),
        A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=(-0.1, 0.1), p=1.0),
    ], p=1.0)


def _official_sharpen() -> A.Compose:
    return A.Compose([A.Sharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0), p=1.0)], p=1.0)


def _official_affine() -> A.Compose:
    # albumentations 1.x's Affine drew the x and y scales apart (keep_ratio False), as here
    return A.Compose([A.Affine(translate_percent={"x": (-0.03, 0.03), "y": (-0.015, 0.015)},
                               scale=(0.95, 1 / 0.95), fit_output=False, p=1.0)], p=1.0)


def _official_elastic() -> A.Compose:
    # albumentations 1.x drew the displacement noise uniformly in [-1, 1] and reflected at the border
    return A.Compose([A.ElasticTransform(alpha=50, sigma=7, noise_distribution="uniform",
                                         border_mode=cv2.BORDER_REFLECT_101, p=1.0)], p=1.0)


def _run(name: str, build, rng: np.random.Generator, **targets) -> dict:
    """Call a cached pipeline with seeds from `rng`: one per transform, since Compose's own
    set_random_seed gives every transform the same seed (their first draws would be one
    number: RGBShift's p-check tied to the contrast and the hue)."""
    pipeline = _seeded(name, build)
    pipeline.set_random_seed(int(rng.integers(2**31 - 1)))
    for t in pipeline.transforms:
        t.set_random_seed(int(rng.integers(2**31 - 1)))
    return pipeline(**targets)


def official_source_transform(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Their `get_source_transforms`: colour, then one of RandomDownScale and Sharpen."""
    out = _run("colour", _official_colour, rng, image=img)["image"]
    if rng.random() < 0.5:  # RandomDownScale: 2x or 4x, nearest down, bilinear up
        h, w = out.shape[:2]
        r = (2, 4)[int(rng.integers(2))]
        small = cv2.resize(out, (max(1, int(w / r)), max(1, int(h / r))), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return _run("sharpen", _official_sharpen, rng, image=out)["image"]


def official_blend_mask(mask01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Their `get_blend_mask` on a uint8 {0, 1} mask: float (H, W) in [0, 1]. As theirs,
    the first blur runs on the uint8 mask, so it rounds back to {0, 1} and the cut to where
    it is 1 smooths the hull's outline rather than eroding it; keep the dtype."""
    h, w = mask01.shape
    size_h, size_w = int(rng.integers(192, 257)), int(rng.integers(192, 257))
    m = cv2.resize(mask01, (size_w, size_h))
    k1 = int(rng.choice(np.arange(5, 26, 2)))
    blurred = cv2.GaussianBlur(m, (k1, k1), 0).astype(np.float64)
    blurred /= max(blurred.max(), 1e-12)
    blurred[blurred < 1] = 0
    k2, sigma = int(rng.choice(np.arange(5, 26, 2))), int(rng.integers(5, 46))
    blurred = cv2.GaussianBlur(blurred, (k2, k2), sigma)
    blurred /= max(blurred.max(), 1e-12)
    return cv2.resize(blurred, (w, h)).astype(np.float32)


def _official_face_blend(img: np.ndarray, landmarks5: np.ndarray | None, rng: np.random.Generator,
                         predictor, alter_target: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Their `self_blending` on the whole face: (target, fake, mask). The source is the
    one altered, or with `alter_target` the target (then returned altered: the REAL of
    the pair, which differs from the fake only where the mask is not 0)."""
    found = (_face_region(img.shape[:2], img, landmarks5, predictor) > 0).astype(np.uint8)
    if not found.any():  # landmarks outside the crop: the centre, where step 1 put the face
        found = (_face_ellipse(img.shape[:2], None) > 0).astype(np.uint8)
    if alter_target:
        source, img = img, official_source_transform(img, rng)
    else:
        source = official_source_transform(img, rng)
    moved = _run("affine", _official_affine, rng, image=source, mask=found)
    source, hull = moved["image"], moved["mask"]
    hull = _run("elastic", _official_elastic, rng, image=source, mask=hull)["mask"]
    if not hull.any():  # moved or deformed away (a face at the crop's edge): the hull as found
        hull = found
    soft = official_blend_mask(hull, rng)
    if not soft.any():  # a hull too small to survive the first blur: the hull itself
        soft = hull.astype(np.float32)
    soft *= BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))]
    m = soft[..., None]
    fake = (m * source.astype(np.float32) + (1.0 - m) * img.astype(np.float32)).astype(np.uint8)
    return img, fake, soft.astype(np.float32)


def self_blend(img: np.ndarray, landmarks5: np.ndarray | None, rng: np.random.Generator,
               predictor=None, regions: dict | None = None, style: str = "official") -> tuple[np.ndarray, np.ndarray]:
    """A self-blended fake of an RGB uint8 crop: (fake uint8 (H, W, 3), mask float32
    (H, W) in [0, 1]); the fake equals the crop wherever the mask is 0. `regions`
    ({"face": w, "lower": w, "mouth": w}) draws the blended region; None: the face.
    `style` "official" makes the whole-face blend as the authors' code (module doc);
    the lower-face and mouth regions (beyond the paper) keep the legacy generator."""
    if style not in STYLES:
        raise ValueError(f"unknown SBI style {style!r}; choices: {', '.join(STYLES)}")
    region = pick_region(regions, rng)
    if style == "official" and region == "face":
        return _official_face_blend(img, landmarks5, rng, predictor)[1:]
    source = _jitter_colour(img, rng)
    source = _frequency_artifact(source, rng, strong=region != "face")
    source = _shift_scale(source, rng)
    mask = blend_mask(img, landmarks5, rng, predictor, region)
    m = mask[..., None]
    fake = source.astype(np.float32) * m + img.astype(np.float32) * (1.0 - m)
    fake = np.clip(np.round(fake), 0, 255).astype(np.uint8)
    return fake, mask


def self_blend_pair(img: np.ndarray, landmarks5: np.ndarray | None, rng: np.random.Generator,
                    predictor=None, regions: dict | None = None,
                    style: str = "official") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A REAL and its self-blended FAKE for one training pair (`data.sbi_pairs`):
    (real uint8, fake uint8, mask float32 (H, W) in [0, 1]); the two are equal wherever
    the mask is 0. As the authors' `self_blending` (style "official", the whole face):
    with probability 1/2 the source is altered, else the target -- and the altered target
    is then the pair's REAL, so that the colour and sharpness of the whole crop say
    nothing and only the blend does. Legacy style and the lower-face/mouth regions always
    alter the source: the REAL is the crop itself."""
    if style not in STYLES:
        raise ValueError(f"unknown SBI style {style!r}; choices: {', '.join(STYLES)}")
    alter_target = bool(rng.random() < 0.5)
    region = pick_region(regions, rng)
    if style == "official" and region == "face":
        return _official_face_blend(img, landmarks5, rng, predictor, alter_target=alter_target)
    fake, mask = self_blend(img, landmarks5, rng, predictor, regions={region: 1.0}, style=style)
    return img, fake, mask
