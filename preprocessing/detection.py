"""Face detection with facenet-pytorch's MTCNN, batched, on downscaled frames.

MTCNN ships its weights inside the facenet-pytorch wheel, so nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# selim (1st place) detected on frames downscaled so that 1080p became ~960 px wide;
# that keeps faces well above MTCNN's minimum size while cutting the work 4x.
DEFAULT_DETECT_LONG_SIDE = 960
# Stricter than facenet-pytorch's defaults (0.6, 0.7, 0.7): fewer false faces in crops and
# fewer candidates for the later stages (faster); looser than selim's (0.85, 0.95, 0.95),
# which missed faces on 4 of the 495 sampled dev-videos frames where these miss none.
DEFAULT_THRESHOLDS = (0.8, 0.9, 0.9)
DEFAULT_MIN_PROB = 0.9


def min_face_size(width: int, height: int, scale: float, fraction: float = 0.04,
                  smallest_face: float = 0.05, floor: int = 20) -> int:
    """Smallest face MTCNN looks for, in detection pixels: `fraction` (4%) of the SHORT
    side (21 px on a 1080p frame detected at a long side of 960), never under MTCNN's usual
    `floor` of 20, but never above the size of the smallest face we must find either:
    `smallest_face` (5%) of the short side, a dark full-body DFDC shot (54 px at 1080p,
    27 px at 960, 14 px at 512), and never under P-Net's 12-px window.

    The short side, for landscape and portrait frames alike: the face of a standing person
    scales with the frame height, and for a portrait frame the short side is the cautious
    choice. Looking no finer than that skips the costliest pyramid levels (MTCNN's first
    level is the frame scaled by 12 / min_face_size): with 3.5% of the LONG side (34 px at
    960) a 5%-height face (27 px) went unseen on dark frames.
    """
    short = min(width, height) * scale
    size = min(max(floor, fraction * short), smallest_face * short)
    return max(12, int(size))


def detection_scale(width: int, height: int, long_side: int = DEFAULT_DETECT_LONG_SIDE) -> float:
    """Downscale factor for detection, from the resolution: large frames are shrunk so
    their long side is `long_side`; small ones (GRID's 360x288) are kept as they are."""
    return min(1.0, long_side / max(width, height))


@dataclass
class Detection:
    boxes: np.ndarray      # (n, 4) float32 x1, y1, x2, y2
    probs: np.ndarray      # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32


def _empty() -> Detection:
    return Detection(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def select_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class FaceDetector:
    """MTCNN over batches of equally sized RGB frames.

    `detect(frames, scale)` downscales by `scale`, detects in one batched call, and
    returns boxes and landmarks in the input frames' pixels.
    """

    def __init__(self, device: str | None = None, thresholds=DEFAULT_THRESHOLDS,
                 min_face_size: int = 20, min_prob: float = DEFAULT_MIN_PROB):
        from facenet_pytorch import MTCNN

        self.device = select_device(device)
        self.min_prob = min_prob
        self.mtcnn = MTCNN(keep_all=True, device=self.device, thresholds=list(thresholds),
                           min_face_size=min_face_size, post_process=False, select_largest=False)
        if self.device == "cpu":
            # NHWC conv weights: oneDNN runs MTCNN's convolutions 1.4x faster on a CPU (16
            # frames at 512 px: 0.96 -> 0.67 s), the boxes equal to 1e-4 px (as training's
            # `channels_last`; not measured on a GPU, so left as it is there)
            import torch

            for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
                for w in net.parameters():
                    if w.dim() == 4:
                        w.data = w.data.contiguous(memory_format=torch.channels_last)

    def detect(self, frames: list[np.ndarray] | np.ndarray, scale: float = 1.0,
               min_face_size: int | None = None) -> list[Detection]:
        """Detect on `frames` downscaled by `scale`; `min_face_size` (detection pixels)
        overrides the constructor's for this call."""
        if len(frames) == 0:
            return []
        if min_face_size is not None:
            self.mtcnn.min_face_size = int(min_face_size)
        if scale != 1.0:
            h, w = frames[0].shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        batch = np.ascontiguousarray(np.stack(frames))
        boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
        out = []
        for b, p, l in zip(boxes, probs, points):
            # facenet-pytorch returns dtype=object arrays, with None where no face was found.
            if b is None or p is None or len(b) == 0:
                out.append(_empty())
                continue
            b = np.asarray(b, dtype=np.float32).reshape(-1, 4) / scale
            p = np.asarray(p, dtype=np.float32).reshape(-1)
            l = np.asarray(l, dtype=np.float32).reshape(-1, 5, 2) / scale
            keep = p >= self.min_prob
            out.append(Detection(b[keep], p[keep], l[keep]))
        return out
