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


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """MTCNN's squares (its `rerec`): each x1, y1, x2, y2 box widened to a square of its
    longer side about its centre, the form its R-Net and O-Net take their crops in."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], 1)


def padded_crop(frame: np.ndarray, box, size: int) -> np.ndarray:
    """The frame inside `box` resized to size x size by pixel area, cut as facenet-pytorch's
    MTCNN cuts its R-Net and O-Net inputs (its boxes count pixels from 1: columns trunc(x1) - 1
    to trunc(x2) - 1, both included), but where the box reaches past the frame the outside is
    zero padding, as in the original MTCNN (facenet-pytorch clips the box to the frame and
    stretches what is left)."""
    h, w = frame.shape[:2]
    x1, y1 = int(np.trunc(box[0])) - 1, int(np.trunc(box[1])) - 1
    x2, y2 = max(x1 + 1, int(np.trunc(box[2]))), max(y1 + 1, int(np.trunc(box[3])))
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if sx1 == x1 and sy1 == y1 and sx2 == x2 and sy2 == y2:
        region = frame[y1:y2, x1:x2]
    else:
        region = np.zeros((y2 - y1, x2 - x1, frame.shape[2]), frame.dtype)
        if sx2 > sx1 and sy2 > sy1:
            region[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1, y1, x2, y2 boxes."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


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

    def refine(self, frames: list[np.ndarray], boxes: list[np.ndarray]) -> list[Detection]:
        """MTCNN's last two stages on boxes already roughly where a face is (prediction's
        boxes interpolated between two detections): each box, squared, is cropped from its
        frame at full resolution for R-Net (24 px), whose box regression gives O-Net's square
        (48 px), whose regression, probability and landmarks are the result, in the frame's
        pixels. The image pyramid and P-Net, most of MTCNN's time, are skipped.

        A box that O-Net does not take for a face (probability under `min_prob`: the face
        turned away, blurred or covered) keeps its input place, with O-Net's probability (its
        landmarks are then O-Net's guess in the square it looked at; nothing uses them). So
        does a box whose refined place overlaps (IoU > 0.7) that of a likelier box of the
        same frame: two faces are never pulled onto one (its probability and landmarks are
        then still those of the face it landed on). One Detection per frame, a box per input
        box, in order."""
        import torch

        sizes = [len(np.asarray(b).reshape(-1, 4)) for b in boxes]
        flat = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes] or [np.zeros((0, 4))])
        if not len(flat):
            return [_empty() for _ in boxes]
        owner = np.repeat(np.arange(len(boxes)), sizes)

        def stage(net, squares, size):
            crops = np.stack([padded_crop(frames[i], b, size) for i, b in zip(owner, squares)])
            x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                out = net((x - 127.5) * 0.0078125)
            return [o.float().cpu().numpy() for o in out]

        def regress(squares, reg):  # MTCNN's bbreg, with its +1 pixel widths
            side = (squares[:, 2:] - squares[:, :2] + 1)[:, [0, 1, 0, 1]]
            return squares + reg * side

        squares = square_boxes(flat)
        reg, _ = stage(self.mtcnn.rnet, squares, 24)
        squares = square_boxes(regress(squares, reg))
        reg, points, prob = stage(self.mtcnn.onet, squares, 48)
        refined, prob = regress(squares, reg), prob[:, 1]
        side = squares[:, 2:3] - squares[:, 0:1] + 1
        landmarks = np.stack([side * points[:, :5] + squares[:, 0:1] - 1,
                              side * points[:, 5:] + squares[:, 1:2] - 1], -1)
        face = prob >= self.min_prob
        refined = np.where(face[:, None], refined, flat).astype(np.float32)
        out, start = [], 0
        for n in sizes:
            sl = slice(start, start + n)
            kept = []  # this frame's refined boxes, likeliest first; a box landing on one of them goes back
            for k in start + np.argsort(-prob[sl], kind="stable"):
                if face[k] and kept and box_iou(refined[k:k + 1], refined[kept]).max() > 0.7:
                    refined[k] = flat[k]
                elif face[k]:
                    kept.append(k)
            out.append(Detection(refined[sl], prob[sl].astype(np.float32), landmarks[sl].astype(np.float32)))
            start += n
        return out
