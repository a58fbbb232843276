"""NTech-Lab's re-encoding augmentation (DFDC 3rd place): a clip's H.264 round trip.

DFDC test videos were re-encoded at unknown frame rates, sizes and qualities, and a
detector that keys on the training set's compression traces breaks on them. NTech
re-encoded each training clip as a *video*: the whole run of consecutive face crops goes
through libx264 at a random frame rate (so frames really drop and the P/B frames predict
across the gaps), a random downscale, CRF and tune, and comes back at its own size. A
single encoded frame would be an intra frame, without the inter-frame artefacts this
augmentation exists for.

Their settings (`TrackTransform` in their training scripts), the defaults here: with
p=0.5 the frame rate becomes an integer in [15, 30) (else the clip's own), with p=0.5
the size is scaled by U(0.25, 1), CRF is an integer in [17, 40), the tune one of six.
The caller applies the augmentation itself with p=0.5 and picks frames of the output: a
sequence maps its frames with `output_index` (fewer frames come out when the frame rate
dropped), a frame pair takes the same frame after the first (intra) one from both clips.

The clip goes through pipes only: one ffmpeg process (the imageio-ffmpeg binary)
resamples, downscales and encodes raw RGB to a raw H.264 stream on stdout, a second
decodes it and scales back to the input size. No file is written.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from preprocessing.video import ffmpeg_exe

NTECH_TUNES = ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency")
# libx264 rejects tiny frames; crops are upscaled to at least this for the round trip.
MIN_SIDE = 16


def _even(v: float) -> int:
    return max(MIN_SIDE, int(round(v / 2)) * 2)


@dataclass(frozen=True)
class ReencodeParams:
    fps: float    # the encoded clip's frame rate (<= the source's: frames drop)
    scale: float  # downscale of both sides before encoding
    crf: int
    tune: str | None

    @classmethod
    def draw(cls, rng: np.random.Generator, src_fps: float, fps_prob: float = 0.5,
             fps_range: tuple[int, int] = (15, 30), scale_prob: float = 0.5,
             scale_range: tuple[float, float] = (0.25, 1.0), crf_range: tuple[int, int] = (17, 40),
             tunes: Sequence[str | None] = NTECH_TUNES) -> "ReencodeParams":
        """NTech's draw, in a fixed order (so equal generators give equal settings: both
        members of a pair are encoded alike). Integer ranges are half-open, as Python's
        randrange in their code."""
        fps = float(rng.integers(*fps_range)) if rng.random() < fps_prob else float(src_fps)
        scale = float(rng.uniform(*scale_range)) if rng.random() < scale_prob else 1.0
        crf = int(rng.integers(*crf_range))
        tune = tunes[int(rng.integers(len(tunes)))] if len(tunes) else None
        return cls(min(fps, float(src_fps)), scale, crf, tune)


def output_index(index: int, num_in: int, num_out: int) -> int:
    """Which re-encoded frame shows input frame `index` (NTech: round(i / n_in * n_out))."""
    return int(min(num_out - 1, max(0, round(index / max(1, num_in) * num_out))))


def reencode_clip(frames: np.ndarray, rng: np.random.Generator | None = None, src_fps: float = 30.0,
                  params: ReencodeParams | None = None, preset: str | None = None, **draw) -> np.ndarray:
    """Encode consecutive RGB uint8 frames (T, H, W, 3) with libx264 as a `src_fps` video
    resampled to `params.fps`, and decode them back at (H, W): (T', H, W, 3), T' <= T.

    `params` default to `ReencodeParams.draw(rng, src_fps, **draw)`. `preset` None keeps
    ffmpeg's default (medium), as NTech's pipes did. An empty clip is returned as is.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if params is None:
        if rng is None:
            raise ValueError("reencode_clip needs a generator or explicit params")
        params = ReencodeParams.draw(rng, src_fps, **draw)
    t, h, w, _ = frames.shape
    if t == 0:
        return frames.copy()

    # yuv420p needs even sizes; the scale filter both downscales and makes them even.
    ew, eh = _even(w * params.scale), _even(h * params.scale)
    exe = ffmpeg_exe()
    common = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1"]
    filters = ([f"fps={params.fps:g}"] if params.fps < src_fps else []) + [f"scale={ew}:{eh}:flags=area"]
    encode = common + [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", f"{src_fps:g}", "-i", "pipe:0",
        "-vf", ",".join(filters), "-c:v", "libx264", *(["-preset", preset] if preset else []),
        "-crf", str(params.crf), "-pix_fmt", "yuv420p", *(["-tune", params.tune] if params.tune else []),
        "-f", "h264", "pipe:1"]
    decode = common + [
        "-f", "h264", "-i", "pipe:0", "-vf", f"scale={w}:{h}:flags=bicubic",
        "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    stream = _run(encode, np.ascontiguousarray(frames).tobytes(), "encode")
    raw = _run(decode, stream, "decode")
    n = len(raw) // (h * w * 3)
    if n == 0:
        raise RuntimeError(f"ffmpeg decoded no frame ({params}, {ew}x{eh})")
    return np.frombuffer(raw[:n * h * w * 3], np.uint8).reshape(n, h, w, 3).copy()


def _run(cmd: list[str], data: bytes, what: str) -> bytes:
    proc = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to {what}: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout
