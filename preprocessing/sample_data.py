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

With --audio (for audio-visual models such as Chugh et al.'s "Not made for each other"
dissonance detector), every clip carries a speech-like mono sound track, 16 kHz, AAC-LC
64 kb/s in the mp4 (`synthesize_speech`: syllable-like voiced bursts, 3-6 a second,
80-250 ms, harmonics of a 100-220 Hz F0 through random vowel formants, pauses between,
silence at both ends), and the face talks in sync with it: each frame's RMS loudness
(over the frame's 1/fps s, over the clip's loudest frame: `loudness_envelope`) is that
frame's mouth opening, which moves the lower lip and the jaw's bottom (dlib points 5-11,
55-59, 65-67) down the face by up to 0.25 x the nose-to-chin distance (a piecewise
affine warp of the lower face from the portrait's landmarks to the moved ones) and shows
a dark mouth cavity between the lips (`MouthRig`), before the camera films the portrait.
A FAKE shares its REAL's track and mouth motion; its swapped face layer (and its mask)
gets the same warp, so the donor's face talks too. Video frames still decode as before
(OpenCV and PyAV read the video stream; the audio is a second stream).
--av-fakes N (needs --audio) adds N FAKE clips per folder whose frames are exactly a
REAL clip's (the same frames re-encoded with the same settings) and whose sound is
wrong, alternately: "shift", the REAL's own track shifted circularly by 0.5-1.5 s either
way (metadata "audio_shift_s", > 0: the sound comes late), and "swap", another REAL
clip's track. Only audio-visual sync tells them from their REAL ("original"). With
--audio, every metadata.json entry gets "audio": true, an av-fake's "av_fake": "shift" or
"swap". The tracks and the av-fakes' names and draws come from a generator of their own,
so names, camera paths and face swaps are those of the run without them; without
--audio and --av-fakes the output is byte-identical to a run without the options.

    python -m preprocessing.sample_data OUT_DIR [--folders 2 --reals 3 --fakes 1 --seed 0] [--mos]
        [--audio [--av-fakes N]]
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


# --------------------------------------------------------------------------- speech / mouth
SAMPLE_RATE = 16000  # Hz, mono: the sound track's rate with audio=True
MOUTH_GAIN = 0.25    # at full opening the lower lip's centre drops 0.25 x the nose-to-chin distance
# How far (times the full drop) each dlib point moves when the mouth opens: the jaw's
# bottom (5-11), the outer (55-59) and inner (65-67) lower lip; mouth corners stay.
MOUTH_DROP = {5: 0.35, 6: 0.65, 7: 0.9, 8: 1.0, 9: 0.9, 10: 0.65, 11: 0.35,
              55: 0.55, 56: 0.9, 57: 1.0, 58: 0.9, 59: 0.55, 65: 0.9, 66: 1.0, 67: 0.9}
_MIN_REFERENCE_RMS = 0.05  # a clip with no syllable (too short for one) keeps its mouth closed
_NOISE_RMS = 0.002         # the room noise under the speech; frames at that level keep the mouth shut


def _syllable(seconds: float, f0: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One voiced burst: the harmonics of a gliding F0 shaped by three vowel formants,
    sometimes led by a short noise burst (a consonant), with smooth on/offsets."""
    m = max(int(round(seconds * sample_rate)), 8)
    t = np.arange(m) / sample_rate
    f = f0 * (1 + rng.uniform(-0.2, 0.1) * t / seconds) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    k = np.arange(1, max(int(3800 / (f0 * 1.1)), 2) + 1)
    formants = ((rng.uniform(300, 850), 90, 1.0), (rng.uniform(850, 2300), 120, 0.6),
                (rng.uniform(2400, 3300), 170, 0.3))
    gain = sum(g / (1 + ((k * f0 - fc) / bw) ** 2) for fc, bw, g in formants) / k + 0.01 / k
    voiced = (gain[:, None] * np.sin(k[:, None] * phase[None] + rng.uniform(0, 2 * np.pi, (len(k), 1)))).sum(0)
    voiced /= np.abs(voiced).max() + 1e-9
    env = np.ones(m)
    attack = min(max(int(rng.uniform(0.015, 0.04) * sample_rate), 1), m // 2)
    release = min(max(int(rng.uniform(0.03, 0.08) * sample_rate), 1), m // 2)
    env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    env[m - release:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(release) + 1) / release)
    voiced *= env
    if rng.random() < 0.5:  # a consonant: high-passed noise over the onset, quickly rising, decaying
        c = max(min(int(rng.uniform(0.02, 0.05) * sample_rate), m // 2), 2)
        ramp = np.minimum(np.arange(c) / (0.003 * sample_rate), 1.0)
        voiced[:c] += 0.3 * np.diff(rng.normal(size=c + 1)) * ramp * np.exp(-np.arange(c) / (0.4 * c))
    return voiced * rng.uniform(0.45, 1.0)


def synthesize_speech(seconds: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A speech-like mono track (float32 in [-1, 1], `seconds` long): syllable-like voiced
    bursts (3-6 a second, 80-250 ms each, a speaker's F0 of 100-220 Hz varied per
    syllable, random vowel formants), short gaps and now and then a longer pause, over
    faint room noise. It starts and ends with silence, so a circular shift is seamless."""
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    f0, rate = rng.uniform(100, 220), rng.uniform(3, 6)
    t, end = rng.uniform(0.08, 0.3), seconds - rng.uniform(0.08, 0.2)
    placed = 0
    while True:
        dur = rng.uniform(0.08, 0.25)
        if t + dur > end:
            if placed or end - t < 0.05 or seconds < 0.2:
                break
            dur = end - t  # a clip too short for a whole syllable gets a short one
        burst = _syllable(dur, f0 * rng.uniform(0.85, 1.2), rng, sample_rate)
        i0 = int(round(t * sample_rate))
        out[i0:i0 + len(burst)] += burst[:n - i0]
        placed += 1
        t += dur + max(0.03, 1 / rate - dur) * rng.uniform(0.6, 1.4)
        if rng.random() < 0.15:
            t += rng.uniform(0.25, 0.6)  # a pause between phrases
    out *= 0.7 / max(np.abs(out).max(), 1e-9)  # speech peaks at 0.7 (nothing placed: silence)
    out += rng.normal(0, _NOISE_RMS, n)  # room noise
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def frame_loudness(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(num_frames,) RMS of the audio (float, or int16 scaled to [-1, 1]) over each video
    frame's duration, 1/fps s (0 past the audio's end)."""
    audio = np.asarray(audio)
    audio = audio / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float64)
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a and a < len(audio) else 0.0
                     for a, b in zip(edges[:-1], np.minimum(edges[1:], len(audio)))])


def loudness_envelope(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame mouth opening in [0, 1]: the frame's RMS loudness over the clip's loudest
    frame's, above the room noise's level (silent frames: 0; a clip without speech stays
    shut)."""
    rms = frame_loudness(audio, num_frames, fps, sample_rate)
    floor = 2 * _NOISE_RMS
    return np.clip((rms - floor) / (max(float(rms.max()), _MIN_REFERENCE_RMS) - floor), 0.0, 1.0)


def _poly_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return mask


class MouthRig:
    """Opens a portrait's mouth by `opening` in [0, 1]: the lower lip and the jaw's bottom
    (MOUTH_DROP) move down the face's axis by opening x MOUTH_GAIN x nose-to-chin, a
    piecewise affine warp from the portrait's landmarks to the displaced ones (over a
    Delaunay triangulation of the lower face, pinned at the border of that region, so
    nothing outside it changes). The upper lip (and the teeth of a smiling portrait)
    stays; the gap between the lips' old and new line is the dark mouth cavity. Only the
    lower face's box is warped, with one seamless remap (no per-triangle seams)."""

    _WARPED = list(range(2, 15)) + list(range(31, 36)) + list(range(48, 60)) + [65, 66, 67]
    _SLIT = [60, 67, 66, 65, 64]  # where the lips meet (the lower inner lip), left to right

    def __init__(self, landmarks: np.ndarray, shape: tuple[int, int], gain: float = MOUTH_GAIN):
        lm = np.asarray(landmarks, np.float64)
        axis = lm[8] - lm[27]
        self.axis = axis / (np.linalg.norm(axis) + 1e-9)  # down the face
        nose_chin = float(np.linalg.norm(lm[8] - lm[33]))
        self.full_drop = gain * nose_chin
        pts = lm[self._WARPED]
        margin = 0.3 * nose_chin + 2
        h, w = shape
        lo = np.floor(pts.min(0) - margin).astype(int)
        hi = np.ceil(pts.max(0) + margin + [0, 1.5 * self.full_drop]).astype(int)
        self.x0, self.y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        self.x1, self.y1 = min(int(hi[0]), w), min(int(hi[1]), h)
        rw, rh = self.x1 - self.x0, self.y1 - self.y0
        border = [(x, y) for x in np.linspace(0, rw - 1, 6) for y in (0, rh - 1)]
        border += [(x, y) for y in np.linspace(0, rh - 1, 6)[1:-1] for x in (0, rw - 1)]
        origin = np.array([self.x0, self.y0], np.float64)
        self.src = np.vstack([pts - origin, np.array(border, np.float64)])
        weights = np.array([MOUTH_DROP.get(i, 0.0) for i in self._WARPED] + [0.0] * len(border))
        self.move = weights[:, None] * self.axis[None]
        self.triangles = _triangles(self.src)
        self.slit = lm[self._SLIT] - origin
        self.slit_move = np.array([MOUTH_DROP.get(i, 0.0) for i in self._SLIT])[:, None] * self.axis[None]
        self.upper_lip = np.vstack([lm[48:55], lm[self._SLIT[::-1]]]) - origin
        self.lips = lm[48:60] - origin
        ys, xs = np.mgrid[0:rh, 0:rw]
        self._grid = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64)

    def cavity_colour(self, image: np.ndarray) -> np.ndarray:
        """The mouth cavity's colour in `image`: its lips' mean colour, darkened."""
        roi = image[self.y0:self.y1, self.x0:self.x1].astype(np.float32)
        mask = _poly_mask(self.lips, roi.shape[:2]) > 0.5
        return 0.3 * (roi[mask].mean(0) if mask.any() else roi.reshape(-1, roi.shape[-1]).mean(0))

    def _maps(self, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """remap's maps of the piecewise affine warp taking self.src to dst (ROI pixels)."""
        rh, rw = self._grid.shape[:2]
        label = np.full((rh, rw), -1, np.int32)
        mats = np.zeros((len(self.triangles) + 1, 2, 3))
        mats[-1] = [[1, 0, 0], [0, 1, 0]]  # uncovered pixels (none but rounding): identity
        for n, tri in enumerate(self.triangles):
            mats[n] = cv2.getAffineTransform(dst[tri].astype(np.float32), self.src[tri].astype(np.float32))
            cv2.fillConvexPoly(label, np.round(dst[tri] * 16).astype(np.int32), int(n), lineType=cv2.LINE_8,
                               shift=4)
        m = mats[label]  # label -1 takes the identity
        xy = np.einsum("hwij,hwj->hwi", m, self._grid)
        return xy[..., 0].astype(np.float32), xy[..., 1].astype(np.float32)

    def apply(self, images: list[np.ndarray], opening: float,
              cavities: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """`images` (float32, the portrait's pixels: HxWx3 layers or HxW masks) with the
        mouth opened by `opening`; the same warp for all. A colour layer with a cavity
        colour (`cavity_colour`) keeps its upper lip and gets the dark gap; masks are only
        warped. Below a quarter pixel of drop the images come back unchanged."""
        drop = float(np.clip(opening, 0.0, 1.0)) * self.full_drop
        if drop < 0.25:
            return list(images)
        cavities = cavities or [None] * len(images)
        mapx, mapy = self._maps(self.src + drop * self.move)
        shape = mapx.shape
        upper = _poly_mask(self.upper_lip, shape)[..., None]
        lower_slit = self.slit + drop * self.slit_move
        gap = _poly_mask(np.vstack([self.slit, lower_slit[::-1]]), shape)[..., None]
        gap *= min(1.0, float(np.abs(drop * self.slit_move).max()) / 1.5)
        out = []
        for image, cavity in zip(images, cavities):
            image = image.copy()
            roi = image[self.y0:self.y1, self.x0:self.x1]
            warped = cv2.remap(roi, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if cavity is not None:
                warped = warped * (1 - upper) + roi * upper
                warped = warped * (1 - gap) + np.asarray(cavity, np.float32) * gap
            roi[:] = warped
            out.append(image)
        return out


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
                grayscale: bool = False, artefacts: Artefacts | None = None,
                mouth: np.ndarray | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames. With `swap`, the face layer is composited before the
    lighting, exactly where the real clip has the target's face (plus `artefacts`'
    offset, and its jitter when `rng` is given; default: the default fake's).

    `mouth`: per-frame mouth opening in [0, 1] (`loudness_envelope` of the clip's sound):
    each frame's portrait gets its mouth opened (`MouthRig`) before the camera films it;
    with `swap`, the face layer and its mask get the same warp, so the swapped face
    talks too. None (or zeros) gives the frames of a clip without it."""
    art = artefacts or Artefacts()
    if mouth is not None:
        mouth = np.asarray(mouth, np.float64)
        if mouth.shape != (num_frames,):
            raise ValueError(f"mouth needs one opening per frame ({num_frames}), got shape {mouth.shape}")
        rig = MouthRig(target.landmarks, target.image.shape[:2])
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
    if mouth is not None:
        layers, cavities = [image], [rig.cavity_colour(image)]
        if swap is not None:
            layers, cavities = layers + [face, mask], cavities + [rig.cavity_colour(face), None]
    for i in range(num_frames):
        pan, zoom, angle, gain, tint = path.at(i / max(num_frames - 1, 1))
        m = camera_matrix(target, size, pan, zoom, angle)
        if mouth is not None:
            image, *swap_layers = rig.apply(layers, mouth[i], cavities)
            if swap is not None:
                face, mask = swap_layers
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


AV_FAKE_KINDS = ("shift", "swap")
AV_SHIFT_RANGE = (0.5, 1.5)  # seconds, either direction


def shifted_audio(track: np.ndarray, seconds: float, rng: np.random.Generator,
                  sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """A shifted copy of `track` (circularly: it starts and ends in silence, so the seam
    is silent too) and the shift in seconds (> 0: the sound comes late), drawn in
    +-[0.5, 1.5] s but at most seconds - 0.5 so that the circular lag stays >= 0.5 s."""
    lo, hi = AV_SHIFT_RANGE[0], min(AV_SHIFT_RANGE[1], seconds - AV_SHIFT_RANGE[0])
    shift = round(float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1), 3)
    return np.roll(track, int(round(shift * sample_rate))), shift


def generate_sample_dataset(out_dir: str | Path, folders: int = 2, reals: int = 3, fakes: int = 1,
                            seconds: float = 2.0, fps: int = 15, size: tuple[int, int] = (320, 240),
                            seed: int = 0, orphan_fakes: int = 0, crf: int = 20,
                            prefix: str = "sample_part", mos: bool = False, audio: bool = False,
                            av_fakes: int = 0) -> dict[str, dict]:
    """Write `folders` DFDC-shaped folders, each with `reals` REAL clips, `fakes` FAKE
    clips per REAL, and `orphan_fakes` FAKE clips whose original is not written.

    With `mos`, each FAKE gets an artefact strength s (stratified over all fakes: one in
    each of N equal bins of [0, 1], in random order) that sets its `Artefacts`, and its
    metadata entry a "mos" (`mos_from_strength`). The strengths and the artefacts'
    directions come from a generator of their own, seeded from `seed`, so names, REAL
    clips and camera paths are those of the same call without `mos`.

    With `audio`, every clip has a sound track (`synthesize_speech`, SAMPLE_RATE Hz mono,
    AAC in the mp4) and its face's mouth opens with the track's loudness
    (`loudness_envelope` -> render_clip's `mouth`); the FAKEs of a REAL share its track and
    mouth motion. Every metadata entry gets "audio": true. `av_fakes` (needs `audio`)
    adds that many FAKE clips per folder whose frames are a REAL clip's (REAL clips taken
    in turn) and whose sound is wrong: alternately (over the dataset) "shift", the REAL's
    own track shifted circularly by +-[0.5, 1.5] s ("audio_shift_s"), and "swap", another
    REAL clip's track (of this or an earlier folder); a kind that cannot be made (clips
    under 1 s cannot shift; a first REAL has no other to swap with) gives the other kind.
    Their entries: "original" is that REAL, "av_fake" the kind. With `mos` they get s = 0
    (their frames are real): "mos" 4.6. The tracks, av-fakes' names and draws come from
    a generator of their own: names, camera paths and face swaps are those of the call
    without audio.

    Deterministic given the arguments (byte-identical files). Returns
    {video id: metadata entry (+ "identity", "donor"; with mos + "artefact_strength";
    av-fakes + "audio_from", the id of the REAL whose sound it carries)}.
    """
    out_dir = Path(out_dir)
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even, got {size}")
    if av_fakes < 0:
        raise ValueError(f"av_fakes must be >= 0, got {av_fakes}")
    if av_fakes and not audio:
        raise ValueError("av_fakes needs audio=True (--av-fakes needs --audio)")
    if av_fakes and reals < 1:
        raise ValueError("av_fakes are made from REAL clips: reals must be >= 1")
    rng = np.random.default_rng(seed)
    names = list(IDENTITIES)
    num_frames = max(2, int(round(seconds * fps)))
    clip_seconds = num_frames / fps
    if av_fakes and clip_seconds < 2 * AV_SHIFT_RANGE[0] and reals < 2:
        raise ValueError(f"av_fakes of clips under {2 * AV_SHIFT_RANGE[0]} s can only swap sounds between REAL "
                         f"clips: reals must be >= 2")
    taken: set[str] = set()
    swaps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    index: dict[str, dict] = {}
    counter = 0
    if mos:
        mos_rng = np.random.default_rng([seed, 0x4D4F53])  # "MOS": apart from `rng`'s stream
        n_fakes = folders * (reals * fakes + orphan_fakes)
        strengths = iter((mos_rng.permutation(n_fakes) + mos_rng.uniform(size=n_fakes)) / max(n_fakes, 1))
    sound: dict = {}
    if audio:
        audio_rng = np.random.default_rng([seed, 0x415544])  # "AUD": apart from `rng`'s stream
        sound = {"audio": True}
        real_tracks: dict[str, np.ndarray] = {}  # video id of every REAL written: its track
        av_counter = 0
    for k in range(folders):
        folder = out_dir / f"{prefix}_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, dict] = {}
        av_sources: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # (name, identity, frames, track)
        for r in range(reals + orphan_fakes):
            identity = names[counter % len(names)]
            counter += 1
            target = load_portrait(identity)
            path = CameraPath.random(rng)
            real_name = _video_name(rng, taken) + ".mp4"
            orphan = r >= reals
            track = mouth = None
            if audio:
                track = synthesize_speech(clip_seconds, np.random.default_rng(audio_rng.integers(2**63)))
                mouth = loudness_envelope(track, num_frames, fps)
            if not orphan:
                frames = render_clip(target, path, size, num_frames, mouth=mouth)
                encode_video(folder / real_name, frames, fps, crf=crf, audio=track)
                meta[real_name] = {"label": "REAL", "split": "train", "original": None, **sound}
                index[f"{folder.name}/{real_name[:-4]}"] = {**meta[real_name], "identity": identity}
                if audio:
                    real_tracks[f"{folder.name}/{real_name[:-4]}"] = track
                if r < av_fakes:  # keep its frames: its av-fakes re-encode them
                    av_sources.append((real_name, identity, frames, track))
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
                                     rng=np.random.default_rng(rng.integers(2**31)), artefacts=art, mouth=mouth)
                fake_name = _video_name(rng, taken) + ".mp4"
                encode_video(folder / fake_name, frames, fps, crf=crf, audio=track)
                meta[fake_name] = {"label": "FAKE", "split": "train", "original": real_name, **extra, **sound}
                index[f"{folder.name}/{fake_name[:-4]}"] = {
                    **meta[fake_name], "identity": identity, "donor": donor,
                    **({"artefact_strength": strength} if mos else {})}
        for j in range(av_fakes):
            real_name, identity, frames, track = av_sources[j % len(av_sources)]
            real_id = f"{folder.name}/{real_name[:-4]}"
            others = [v for v in real_tracks if v != real_id]
            possible = [kind for kind, ok in zip(AV_FAKE_KINDS, (clip_seconds >= 2 * AV_SHIFT_RANGE[0], others))
                        if ok]
            if not possible:
                raise ValueError(f"cannot make an av-fake of {real_id}: clips under {2 * AV_SHIFT_RANGE[0]} s "
                                 f"cannot shift their sound and no other REAL clip has been written to swap with")
            kind = AV_FAKE_KINDS[av_counter % 2]
            av_counter += 1
            if kind not in possible:
                kind = possible[0]
            extra = {}
            if kind == "shift":
                wrong, shift = shifted_audio(track, clip_seconds, audio_rng)
                extra, source = {"audio_shift_s": shift}, real_id
            else:
                source = others[int(audio_rng.integers(len(others)))]
                wrong = real_tracks[source]
            av_name = _video_name(audio_rng, taken) + ".mp4"
            encode_video(folder / av_name, frames, fps, crf=crf, audio=wrong)
            meta[av_name] = {"label": "FAKE", "split": "train", "original": real_name, **sound, "av_fake": kind,
                             **extra, **({"mos": mos_from_strength(0.0)} if mos else {})}
            index[f"{folder.name}/{av_name[:-4]}"] = {
                **meta[av_name], "identity": identity, "audio_from": source,
                **({"artefact_strength": 0.0} if mos else {})}
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
    p.add_argument("--audio", action="store_true",
                   help="give every clip a speech-like sound track (16 kHz mono, AAC) whose per-frame loudness "
                        "opens the face's mouth (lower lip and jaw drop, a dark cavity between the lips), so "
                        "REAL clips are in sync; FAKEs share their REAL's sound and mouth motion; every "
                        "metadata.json entry gets \"audio\": true")
    p.add_argument("--av-fakes", type=int, default=0, metavar="N",
                   help="with --audio: N extra FAKE clips per folder with a REAL clip's frames and the wrong "
                        "sound, alternately shifted by 0.5-1.5 s (\"av_fake\": \"shift\", \"audio_shift_s\") "
                        "or another REAL clip's (\"av_fake\": \"swap\")")
    a = p.parse_args(argv)
    if a.av_fakes and not a.audio:
        p.error("--av-fakes needs --audio")
    index = generate_sample_dataset(a.out_dir, a.folders, a.reals, a.fakes, a.seconds, a.fps, tuple(a.size),
                                    a.seed, a.orphan_fakes, prefix=a.prefix, mos=a.mos, audio=a.audio,
                                    av_fakes=a.av_fakes)
    n_fake = sum(v["label"] == "FAKE" for v in index.values())
    print(f"[sample_data] wrote {len(index)} videos ({len(index) - n_fake} REAL, {n_fake} FAKE) to {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
