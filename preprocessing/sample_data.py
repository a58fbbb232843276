"""A small DFDC-shaped dataset, generated from public-domain portraits that installed
packages ship, so the pipeline and its tests run anywhere without downloads.

REAL: a portrait filmed by a virtual camera with smooth motion (pan, zoom, small
rotation) and a lighting change. FAKE: the same REAL clip, frame for frame, with the
face replaced by another identity's face: the donor face is warped onto the target
by 68 dlib landmarks (piecewise affine over a Delaunay triangulation), colour-matched
in Lab and blended through a feathered hull mask - a classic graphics face swap. The
swapped layer follows the camera motion frame by frame with a little temporal jitter
and blur, the artefacts a detector should learn. Outside the mask a fake's pixels are
the original's, so real/fake crops are pixel-aligned (up to H.264 noise).

With --mos (realism regression, as DFGC-2023's MOS track), every FAKE draws an
artefact strength s in [0, 1] (stratified over the dataset's fakes, from a generator
of its own so nothing else changes) that drives its artefacts together (see
`Artefacts.from_strength`): a sharper blend seam, a weaker colour match plus a colour
cast, a blurrier face layer, more frame-to-frame jitter and a constant misalignment of
the swapped layer. s=0 is the default fake; s=1 is clearly broken but still a face.
Its metadata.json entry gets "mos": 4.6 - 3.6 s rounded to 0.1 (`mos_from_strength`),
on DFGC's scale of about [1, 4.6]; REAL clips get no "mos". Without --mos the output
is byte-identical to a run without the option.

    python -m preprocessing.sample_data OUT_DIR [--folders 2 --reals 3 --fakes 1 --seed 0] [--mos]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import string
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .video import encode_video

JAW_AND_BROWS = list(range(0, 27))


# --------------------------------------------------------------------------- portraits
def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.array(Image.open(f).convert("RGB"))


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _cameraman() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2RGB)


# Public-domain portraits shipped by scikit-image and matplotlib.
IDENTITIES = {"astronaut": _astronaut, "grace_hopper": _grace_hopper, "cameraman": _cameraman}
# Faces seen from the front make clean donors; the cameraman's three-quarter view does not.
DONORS = ("astronaut", "grace_hopper")


def shape_predictor_path() -> Path:
    """dlib's 68-point model inside face-recognition-models. Found without importing the
    package: its __init__ imports pkg_resources, which new setuptools no longer has."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install -r requirements.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.exists():
        raise RuntimeError(f"dlib 68-point predictor not found at {path}")
    return path


@dataclass
class Portrait:
    name: str
    image: np.ndarray      # RGB uint8
    landmarks: np.ndarray  # (68, 2) float32, dlib order
    box: np.ndarray        # (4,) MTCNN face box x1, y1, x2, y2


@lru_cache(maxsize=None)
def load_portrait(name: str) -> Portrait:
    """A portrait with its face box (MTCNN) and 68 landmarks (dlib, inside that box)."""
    import dlib

    from .detection import FaceDetector

    image = IDENTITIES[name]()
    det = FaceDetector(device="cpu").detect([image])[0]
    if len(det.boxes) == 0:
        raise RuntimeError(f"no face found in portrait {name}")
    box = det.boxes[int(np.argmax(det.probs))]
    predictor = _predictor()
    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = predictor(image, rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    return Portrait(name, image, points, box)


@lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(shape_predictor_path()))


# --------------------------------------------------------------------------- face swap
def _triangles(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices


def warp_piecewise_affine(src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray,
                          out_shape: tuple[int, int]) -> np.ndarray:
    """Warp `src` so that src_pts land on dst_pts, triangle by triangle."""
    out = np.zeros((*out_shape, 3), np.float32)
    src = src.astype(np.float32)
    for tri in _triangles(dst_pts):
        s, d = src_pts[tri].astype(np.float32), dst_pts[tri].astype(np.float32)
        x, y, w, h = cv2.boundingRect(d)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, out_shape[1]), min(y + h, out_shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        m = cv2.getAffineTransform(s, d - np.float32([x0, y0]))
        patch = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillConvexPoly(mask, np.round(d - [x0, y0]).astype(np.int32), 1.0, lineType=cv2.LINE_AA)
        region = out[y0:y1, x0:x1]
        region[:] = region * (1 - mask[..., None]) + patch * mask[..., None]
    return out


def face_mask(points: np.ndarray, shape: tuple[int, int], feather: float) -> np.ndarray:
    """Feathered float mask in [0, 1] of the landmark hull (jaw + brows), shrunk a little
    so the blend seam stays inside the face."""
    hull = cv2.convexHull(np.round(points[JAW_AND_BROWS]).astype(np.int32))
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    k = max(3, int(feather) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=max(feather / 2, 1.0))


def match_colour(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in Lab: give `face` the target's mean/std under the mask."""
    sel = mask > 0.5
    f_lab = cv2.cvtColor(np.clip(face, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    t_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    for c in range(3):
        fm, fs = f_lab[..., c][sel].mean(), f_lab[..., c][sel].std() + 1e-3
        tm, ts = t_lab[..., c][sel].mean(), t_lab[..., c][sel].std() + 1e-3
        f_lab[..., c] = (f_lab[..., c] - fm) * (ts / fs) + tm
    return cv2.cvtColor(np.clip(f_lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)


# --------------------------------------------------------------------------- artefacts / MOS
MOS_BEST, MOS_WORST = 4.6, 1.0  # DFGC-2023's MOS of its fakes lie in about [1, 4.6]


@dataclass(frozen=True)
class Artefacts:
    """How strong a fake's swap artefacts are. The defaults are the default fake's.

    feather_scale: multiplies the blend mask's feather (smaller: sharper seam, harder edge).
    colour_match: weight of the Reinhard colour match (1: full, 0: the donor's raw colours).
    colour_shift: RGB offset added to the face layer after the match (a colour cast).
    blur: extra Gaussian blur of the face layer, sigma as a fraction of the face width
        (on top of the 0.8 px softness every swapped face gets).
    jitter: std, in frame pixels, of the swapped layer's frame-to-frame wobble.
    offset: constant (dx, dy) shift of the swapped layer (face and mask), in face widths.
    """

    feather_scale: float = 1.0
    colour_match: float = 1.0
    colour_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    blur: float = 0.0
    jitter: float = 0.35
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_strength(cls, s: float, rng: np.random.Generator | None = None) -> "Artefacts":
        """All artefacts together, growing linearly with s in [0, 1]; s=0 gives the defaults.
        The colour cast's and the misalignment's directions are drawn from `rng` (fixed
        ones without it); their sizes depend on s only."""
        s = float(np.clip(s, 0.0, 1.0))
        if rng is None:
            cast, angle = np.array([0.8, 0.2, -0.56]), np.pi / 4
        else:
            cast, angle = rng.normal(size=3), float(rng.uniform(0, 2 * np.pi))
        cast = cast / (np.linalg.norm(cast) + 1e-9) * 30.0 * s
        shift = 0.12 * s
        return cls(feather_scale=1.0 - 0.9 * s, colour_match=1.0 - s,
                   colour_shift=tuple(float(c) for c in cast), blur=0.015 * s, jitter=0.35 + 2.65 * s,
                   offset=(float(shift * np.cos(angle)), float(shift * np.sin(angle))))


def mos_from_strength(s, step: float | None = 0.1):
    """DFGC-style mean opinion score of a fake with artefact strength s in [0, 1]:
    4.6 - 3.6 s (strictly decreasing), rounded to multiples of `step` (None: unrounded).
    Works on floats and arrays."""
    mos = MOS_BEST - (MOS_BEST - MOS_WORST) * np.clip(np.asarray(s, np.float64), 0.0, 1.0)
    if step is not None:
        mos = np.round(np.round(mos / step) * step, 6)
    return float(mos) if mos.ndim == 0 else mos


def swap_face(target: Portrait, donor: Portrait,
              artefacts: Artefacts | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(face layer, alpha mask) in the target portrait's pixels: the donor's face warped
    onto the target's landmarks and colour-matched. `artefacts` (default: the default
    fake's) sets the mask's feather and the colour match / cast; render_clip applies the
    rest (blur, jitter, offset)."""
    art = artefacts or Artefacts()
    h, w = target.image.shape[:2]
    warped = warp_piecewise_affine(donor.image, donor.landmarks, target.landmarks, (h, w))
    face_size = float(np.ptp(target.landmarks[:, 0]))
    feather = max(3.0, face_size * 0.08)
    if art.feather_scale != 1.0:
        feather *= art.feather_scale
    mask = face_mask(target.landmarks, (h, w), feather=feather)
    face = match_colour(warped, target.image, mask)
    if art.colour_match != 1.0:
        face = warped + np.float32(art.colour_match) * (face - warped)
    if any(art.colour_shift):
        face = np.clip(face + np.asarray(art.colour_shift, np.float32), 0, 255)
    return face, mask


# --------------------------------------------------------------------------- virtual camera
@dataclass
class CameraPath:
    """Smooth motion and lighting over a clip, drawn from a seeded generator."""

    pan: np.ndarray       # (2,) end offset of the view centre, in face sizes
    zoom: tuple[float, float]
    angle: tuple[float, float]  # degrees
    gain: tuple[float, float]
    tint: np.ndarray      # (3,) end per-channel multiplier

    @classmethod
    def random(cls, rng: np.random.Generator) -> "CameraPath":
        return cls(pan=rng.uniform(-0.25, 0.25, 2), zoom=(1.0, float(rng.uniform(0.85, 1.2))),
                   angle=(float(rng.uniform(-3, 3)), float(rng.uniform(-6, 6))),
                   gain=(float(rng.uniform(0.85, 1.1)), float(rng.uniform(0.7, 1.2))),
                   tint=rng.uniform(0.92, 1.08, 3))

    def at(self, t: float):
        s = t * t * (3 - 2 * t)  # smoothstep: starts and stops gently
        lerp = lambda a, b: a + (b - a) * s  # noqa: E731
        return (self.pan * s, lerp(*self.zoom), lerp(*self.angle), lerp(*self.gain),
                1.0 + (self.tint - 1.0) * s)


def camera_matrix(portrait: Portrait, size: tuple[int, int], pan, zoom: float, angle: float,
                  face_fraction: float = 0.42) -> np.ndarray:
    """2x3 affine from portrait pixels to frame pixels: the face centred (plus pan),
    its height `face_fraction` of the frame's shorter side (times zoom), rotated."""
    w, h = size
    x1, y1, x2, y2 = portrait.box
    face = max(x2 - x1, y2 - y1)
    # Head-and-shoulders framing: the view centre sits a little below the face.
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2 + 0.3 * face]) + np.asarray(pan) * face
    scale = face_fraction * min(w, h) / face * zoom
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[:, 2] += np.array([w / 2, h / 2]) - centre
    return m


def render_clip(target: Portrait, path: CameraPath, size: tuple[int, int], num_frames: int,
                swap: tuple[np.ndarray, np.ndarray] | None = None, rng: np.random.Generator | None = None,
                grayscale: bool = False, artefacts: Artefacts | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames. With `swap`, the face layer is composited before the
    lighting, exactly where the real clip has the target's face (plus `artefacts`'
    offset, and its jitter when `rng` is given; default: the default fake's)."""
    art = artefacts or Artefacts()
    w, h = size
    frames = []
    image = target.image.astype(np.float32)
    if swap is not None:
        face, mask = swap
        face = cv2.GaussianBlur(face, (0, 0), 0.8)  # generated faces are a little soft
        x1, y1, x2, y2 = target.box
        face_width = float(x2 - x1)
        if art.blur > 0:
            # Blur only what lies under the mask (normalised), so no dark rim bleeds in.
            sigma = art.blur * face_width
            weight = cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]
            face = cv2.GaussianBlur(face * mask[..., None], (0, 0), sigma) / np.maximum(weight, 1e-3)
        offset = np.asarray(art.offset, np.float64) * face_width  # in portrait pixels
    for i in range(num_frames):
        pan, zoom, angle, gain, tint = path.at(i / max(num_frames - 1, 1))
        m = camera_matrix(target, size, pan, zoom, angle)
        frame = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if swap is not None:
            mj = m.copy()
            if offset.any():  # the swapped layer sits off the face: shift it in portrait pixels
                mj[:, 2] += m[:, :2] @ offset
            if rng is not None:  # the swapped layer wobbles a little from frame to frame
                mj[:, 2] += rng.normal(0, art.jitter, 2)
            f = cv2.warpAffine(face, mj, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            a = cv2.warpAffine(mask, mj, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
            frame = frame * (1 - a) + f * a
        frame = frame * gain * tint
        if grayscale:
            frame = np.repeat(frame.mean(axis=2, keepdims=True), 3, axis=2)
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return np.stack(frames)


# --------------------------------------------------------------------------- dataset
def _video_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(list(string.ascii_lowercase), 10))
        if name not in taken:
            taken.add(name)
            return name


def generate_sample_dataset(out_dir: str | Path, folders: int = 2, reals: int = 3, fakes: int = 1,
                            seconds: float = 2.0, fps: int = 15, size: tuple[int, int] = (320, 240),
                            seed: int = 0, orphan_fakes: int = 0, crf: int = 20,
                            prefix: str = "sample_part", mos: bool = False) -> dict[str, dict]:
    """Write `folders` DFDC-shaped folders, each with `reals` REAL clips, `fakes` FAKE
    clips per REAL, and `orphan_fakes` FAKE clips whose original is not written.

    With `mos`, each FAKE gets an artefact strength s (stratified over all fakes: one in
    each of N equal bins of [0, 1], in random order) that sets its `Artefacts`, and its
    metadata entry a "mos" (`mos_from_strength`). The strengths and the artefacts'
    directions come from a generator of their own, seeded from `seed`, so names, REAL
    clips and camera paths are those of the same call without `mos`.

    Deterministic given the arguments (byte-identical files). Returns
    {video id: metadata entry (+ "identity", "donor"; with mos + "artefact_strength")}.
    """
    out_dir = Path(out_dir)
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even, got {size}")
    rng = np.random.default_rng(seed)
    names = list(IDENTITIES)
    num_frames = max(2, int(round(seconds * fps)))
    taken: set[str] = set()
    swaps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    index: dict[str, dict] = {}
    counter = 0
    if mos:
        mos_rng = np.random.default_rng([seed, 0x4D4F53])  # "MOS": apart from `rng`'s stream
        n_fakes = folders * (reals * fakes + orphan_fakes)
        strengths = iter((mos_rng.permutation(n_fakes) + mos_rng.uniform(size=n_fakes)) / max(n_fakes, 1))
    for k in range(folders):
        folder = out_dir / f"{prefix}_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, dict] = {}
        for r in range(reals + orphan_fakes):
            identity = names[counter % len(names)]
            counter += 1
            target = load_portrait(identity)
            path = CameraPath.random(rng)
            real_name = _video_name(rng, taken) + ".mp4"
            orphan = r >= reals
            if not orphan:
                encode_video(folder / real_name, render_clip(target, path, size, num_frames), fps, crf=crf)
                meta[real_name] = {"label": "REAL", "split": "train", "original": None}
                index[f"{folder.name}/{real_name[:-4]}"] = {**meta[real_name], "identity": identity}
            donors = [n for n in DONORS if n != identity]
            for j in range(1 if orphan else fakes):
                donor = donors[int(rng.integers(len(donors)))]
                art, extra = None, {}
                if mos:
                    strength = float(next(strengths))
                    art = Artefacts.from_strength(strength, mos_rng)
                    extra = {"mos": mos_from_strength(strength)}
                key = (identity, donor) if art is None else (identity, donor, art)
                if key not in swaps:  # the swap layer depends on the artefacts too
                    swaps[key] = swap_face(target, load_portrait(donor), art)
                frames = render_clip(target, path, size, num_frames, swap=swaps[key],
                                     rng=np.random.default_rng(rng.integers(2**31)), artefacts=art)
                fake_name = _video_name(rng, taken) + ".mp4"
                encode_video(folder / fake_name, frames, fps, crf=crf)
                meta[fake_name] = {"label": "FAKE", "split": "train", "original": real_name, **extra}
                index[f"{folder.name}/{fake_name[:-4]}"] = {
                    **meta[fake_name], "identity": identity, "donor": donor,
                    **({"artefact_strength": strength} if mos else {})}
        (folder / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--folders", type=int, default=2)
    p.add_argument("--reals", type=int, default=3, help="REAL clips per folder")
    p.add_argument("--fakes", type=int, default=1, help="FAKE clips per REAL")
    p.add_argument("--orphan-fakes", type=int, default=0, help="FAKE clips per folder whose original is absent")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="sample_part")
    p.add_argument("--mos", action="store_true",
                   help="give each FAKE a random artefact strength s in [0, 1] (sharper seam, weaker colour "
                        "match and a colour cast, blur, jitter, misalignment, all growing with s) and a "
                        "\"mos\" in its metadata.json entry: 4.6 - 3.6 s rounded to 0.1 (DFGC-2023's "
                        "scale); REAL clips get none")
    a = p.parse_args(argv)
    index = generate_sample_dataset(a.out_dir, a.folders, a.reals, a.fakes, a.seconds, a.fps, tuple(a.size),
                                    a.seed, a.orphan_fakes, prefix=a.prefix, mos=a.mos)
    n_fake = sum(v["label"] == "FAKE" for v in index.values())
    print(f"[sample_data] wrote {len(index)} videos ({len(index) - n_fake} REAL, {n_fake} FAKE) to {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
