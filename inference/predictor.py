"""Step 6: score videos with an ensemble of checkpoints.

Per video: sample N frames evenly and decode them in one pass (no seeking); detect faces
with MTCNN on a downscaled copy (long side `detect_long_side`), in batches, on every
k-th sampled frame and the last (`detect_every`), the boxes of the frames between
interpolated from the two detections around them and refined by MTCNN's R-Net and O-Net;
crop every face with the training margin; resize
isotropically and pad to each model's size, normalise with the checkpoint's config;
score with every model (a sequence model gets T consecutive frames per face); combine
with an aggregation strategy; optionally calibrate. Decoding and detection of the next
videos run in background threads while the models score the current one.

Every input gets a row: a video that cannot be read or shows no face gets 0.5, and
the reason is logged.

Realism (MOS) checkpoints (`task: mos`, VRA) are scored the same way, with their own
frame plan: `mos_sequences` runs of seq_len consecutive frames per video, at random
starts drawn from a seed and the file name (reproducible); a model's MOS is the mean
over them, the ensemble's the weighted mean over models (`weights`). A video that
cannot be scored gets the models' training-label mean. MOS and detection checkpoints
do not mix in one call.

Dissonance checkpoints (`task: av`, Chugh et al.) sit in a detection ensemble: the
video's sound is read (ffmpeg, 16 kHz), the whole segments (`data.av_segment_s`, 1 s by
default) of its first `max_segments` seconds each get `seq_len` frames, cut by training's
rule (`preprocessing.audio.segments`): the frame shown nearest to each of `seq_len` evenly
spaced times from the segment's start, by presentation time (the packets' timestamps; a
variable frame rate lines up with the sound), cut around the main face with the nearest
detection's box; the model's MDS (the mean segment distance, or with `model.mds` "video"
one distance over the joined segments)
becomes P(FAKE) through the calibration fitted on validation. A video without sound gets
no prediction from it (it abstains; the ensemble uses the other models).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from preprocessing.crops import DEFAULT_MARGIN, crop_box
from preprocessing.dataset import is_video_file, walk_files
from preprocessing.detection import FaceDetector, box_iou, detection_scale, min_face_size, select_device
from preprocessing.video import FrameReader, decoder_counters

FALLBACK = 0.5  # the log-loss-optimal guess for a video we know nothing about
# Where faces are looked for (bench/boxes_iou.py, dev-videos, against step 0's detection on
# every anchor at a long side of 960): MTCNN on every 8th sampled anchor and the last at step
# 0's scale (there the crops are the training crops), the anchors between interpolated and
# refined by R-Net + O-Net: mean box IoU 0.931 (0.917 on the DFDC/FF++ clips) in 0.18 s of
# detection per video. The earlier default, full MTCNN on every anchor at 512, gave 0.945
# (0.903) in 0.79 s; every 4th at 960 0.942 (0.931) in 0.32 s; interpolation without the
# refinement 0.865-0.894 (0.76-0.82).
DEFAULT_DETECT_LONG_SIDE = 960
DEFAULT_DETECT_EVERY = 8
# No face at that scale: try again at full resolution (and, for a smaller detect_long_side,
# at step 0's scale first; a dark full-body shot whose face is 5% of the frame height is 27 px at 960).
DEFAULT_RETRY_LONG_SIDES = (960, 1 << 16)


@dataclass
class LoadedModel:
    """A checkpoint ready to score faces the way it was trained: its crop margin, input
    geometry and normalisation (`transforms.Augmenter` in validation mode, the same code
    as training's validation), clip length and frame rate, and test-time flip."""

    name: str
    model: torch.nn.Module
    cfg: dict
    augment: object = None

    def __post_init__(self):
        if self.augment is None:
            from training.transforms import Augmenter

            self.augment = Augmenter(self.cfg, train=False)

    @property
    def margin(self) -> float:
        return DEFAULT_MARGIN if self.cfg.get("margin") is None else float(self.cfg["margin"])

    @property
    def task(self) -> str:  # detect | mos
        return self.cfg.get("task", "detect")

    @property
    def seq_len(self) -> int:  # 1 for frame models
        from training.config import is_clip_model

        return self.cfg["data"]["seq_len"] if is_clip_model(self.cfg) else 1

    @property
    def is_sequence(self) -> bool:  # clips of consecutive frames (a dissonance model takes 1-s segments)
        return self.seq_len > 1 and self.task != "av"

    @property
    def is_av(self) -> bool:
        return self.task == "av"

    @property
    def av_size(self) -> int:  # a dissonance model's square input side
        from training.config import input_hw

        return input_hw(self.cfg)[0]

    @property
    def av_segment_s(self) -> float:  # a dissonance model's segment length, seconds
        return float(self.cfg["data"].get("av_segment_s", 1.0))

    @property
    def flip_half(self) -> bool:
        return self.cfg.get("inference", {}).get("flip") == "half"

    def clip_offsets(self, fps: float) -> list[int]:
        """Frame offsets of a clip from its anchor: seq_len frames 1/clip_fps apart."""
        from training.datasets import clip_stride

        stride = clip_stride(fps, self.cfg["data"]["clip_fps"])
        return [j * stride for j in range(self.seq_len)]


def load_models(paths: list[str | Path], device: torch.device) -> list[LoadedModel]:
    """Each checkpoint's model in eval mode (its fingerprint verified), batch norms folded
    into the convolutions before them (`inference.fuse`: the same logits, faster). The
    folded model must reproduce the unfolded one's fingerprint logits; where it does not (a
    timm whose blocks run in another order), the model is reloaded unfolded, with a warning."""
    from training import fingerprint
    from training.engine import model_from_checkpoint, resolve_path

    from .fuse import fold_batchnorm, foldable

    paths, models = list(paths), []
    for p, name in zip(paths, model_names(paths)):
        path = resolve_path(p)
        model, cfg = model_from_checkpoint(path, device)
        if foldable(model):  # (nothing to fold, nothing to check: no forward pass)
            before = torch.tensor(fingerprint.logits(model, cfg), dtype=torch.float64)
            fold_batchnorm(model)
            after = torch.tensor(fingerprint.logits(model, cfg), dtype=torch.float64)
            if not torch.allclose(after, before, rtol=1e-3, atol=1e-4):
                warnings.warn(f"{path}: folding its batch norms changed its logits by "
                              f"{float((after - before).abs().max()):.3g}; it runs unfolded", stacklevel=2)
                model, cfg = model_from_checkpoint(path, device)
        models.append(LoadedModel(name, model, cfg))
    return models


def model_names(paths: list[str | Path]) -> list[str]:
    """A distinct name per checkpoint, the key of its details in `--json` and of its
    dissonance evidence: the file's stem, prefixed by its folder where two files share a
    stem (one config trained with several seeds), and numbered where even that repeats."""
    stems = [Path(p).stem for p in paths]
    names = [s if stems.count(s) == 1 else f"{Path(p).resolve().parent.name}/{s}" for p, s in zip(paths, stems)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}#{seen[n]}")
    return out


AMP_MODES = ("auto", "on", "off")


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX tiles). Elsewhere
    oneDNN emulates bf16, slower than float32, so `auto` leaves such a CPU in float32."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)  # private torch helpers: absent means no
        try:
            if probe is not None and probe():
                return True
        except Exception:  # noqa: BLE001 -- a probe that fails says nothing: float32
            pass
    return False


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype the face models predict in. `auto`: bf16 on a GPU that computes it
    natively (fp16 on an older one), bf16 on a CPU that computes it natively (2.1x faster for Lite0,
    1.6x for the sequence model on 2 cores), float32 elsewhere; `on`: also on any other
    CPU; `off`: float32 everywhere."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")
    if amp == "off":
        return None
    if device.type == "cuda":
        from training.engine import gpu_amp_dtype

        return gpu_amp_dtype()
    if device.type == "cpu" and (amp == "on" or cpu_bf16_supported()):
        return torch.bfloat16
    return None


def decode_threads_per_worker(workers: int) -> int | None:
    """FFmpeg threads for each of `workers` videos decoding at once: this process's cores shared
    among them (None for one worker: FFmpeg's own choice, a thread per core)."""
    if workers <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


def clip_span(models: list[LoadedModel], fps: float = 30.0) -> int:
    """Frames to decode from a clip anchor on for the ensemble's sequence models at this
    frame rate (1: no sequence model; NTech's 7 frames at 15 fps: 13 of a 30-fps video)."""
    return max([m.clip_offsets(fps)[-1] + 1 for m in models if m.is_sequence] or [1])


def list_videos(test_dir: str | Path) -> list[Path]:
    """Every file with a video extension under test_dir (sorted), whatever its content."""
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise FileNotFoundError(f"test dir {test_dir} does not exist or is not a folder")
    return [p for p in walk_files(test_dir) if is_video_file(p)]


def dir_videos(test_dir: str | Path) -> list[tuple[str, Path]]:
    """(name relative to test_dir, path) of every video under it: predict_videos' input."""
    test_dir = Path(test_dir)
    return [(p.relative_to(test_dir).as_posix(), p) for p in list_videos(test_dir)]


def read_ensemble(path: str | Path) -> list[str]:
    """The checkpoint paths of an ensemble list (weights/ensemble.txt: one per line, '#'
    comments and blank lines skipped)."""
    return [line.strip() for line in Path(path).read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def sample_indices(num_frames: int, n: int) -> list[int]:
    """n frame indices spread evenly over the video (all of them if it is shorter)."""
    if num_frames <= 0:
        return list(range(n))  # unknown length: the first n frames
    return sorted(set(np.linspace(0, num_frames - 1, min(n, num_frames)).round().astype(int).tolist()))


def frame_plan(frame_count: int, num_frames: int, clip_len: int = 1, num_clips: int = 8,
               rng: np.random.Generator | None = None) -> tuple[list[int], set[int], set[int]]:
    """(anchors, clip anchors, frames to decode): `num_frames` anchors spread evenly; on
    `num_clips` of them, also the clip_len-1 frames that follow (sequence models).

    With `rng` (realism models, VRA) the anchors are instead `num_clips` distinct random
    clip starts in [0, frame_count - clip_len] (all of them for a shorter video), each a
    clip anchor."""
    if rng is not None and frame_count > 0:
        starts = max(1, frame_count - clip_len + 1)
        picked = rng.choice(starts, size=min(num_clips, starts), replace=False)
        anchors = sorted(int(a) for a in picked)
        return anchors, set(anchors), {a + j for a in anchors for j in range(clip_len)}
    anchors = sample_indices(frame_count, num_frames)
    clip_anchors = set(anchors[::max(1, len(anchors) // max(1, num_clips))]) if clip_len > 1 else set()
    wanted = set(anchors) | {a + j for a in clip_anchors for j in range(clip_len)}
    return anchors, clip_anchors, wanted


def detection_anchors(anchors: list[int], detect_every: int) -> list[int]:
    """The anchors the detector runs on: every `detect_every`-th and the last (so that every
    other anchor lies between two detections: no extrapolation)."""
    detect_on = anchors[::max(1, detect_every)]
    return detect_on if detect_on[-1] == anchors[-1] else detect_on + [anchors[-1]]


def interpolate_boxes(found: dict[int, np.ndarray], anchors: list[int], min_iou: float = 0.2) -> dict[int, np.ndarray]:
    """{anchor: (n, 4) boxes} for every anchor from the detections on some of them.

    A detected anchor keeps its boxes. An anchor between two detected ones takes, for each
    face found on both (matched greedily by IoU >= min_iou, largest overlap first), the box
    linearly interpolated in time between the two, then the unmatched faces of the nearer
    detection as they are (ties go to the earlier one); an anchor outside them takes the
    nearest detection's boxes. Faces keep the nearer detection's order, matched first.
    """
    keys = sorted(found)
    out = {}
    for a in anchors:
        if a in found:
            out[a] = found[a]
            continue
        right = int(np.searchsorted(keys, a))
        if right == 0 or right == len(keys):
            out[a] = found[keys[min(right, len(keys) - 1)]]
            continue
        lo, hi = keys[right - 1], keys[right]
        t = (a - lo) / (hi - lo)
        left_boxes = np.asarray(found[lo], np.float32).reshape(-1, 4)
        right_boxes = np.asarray(found[hi], np.float32).reshape(-1, 4)
        near_is_left = t <= 0.5
        pairs = []
        if len(left_boxes) and len(right_boxes):
            ious = box_iou(left_boxes, right_boxes)
            for i, j in zip(*np.unravel_index(np.argsort(-ious, axis=None), ious.shape)):
                if ious[i, j] < min_iou:
                    break
                if all(i != p for p, _ in pairs) and all(j != q for _, q in pairs):
                    pairs.append((int(i), int(j)))
        pairs.sort(key=lambda pq: pq[0] if near_is_left else pq[1])
        boxes = [(1 - t) * left_boxes[i] + t * right_boxes[j] for i, j in pairs]
        near, used = (left_boxes, {i for i, _ in pairs}) if near_is_left else (right_boxes, {j for _, j in pairs})
        boxes += [near[k] for k in range(len(near)) if k not in used]
        out[a] = np.asarray(boxes, np.float32).reshape(-1, 4)
    return out


# A container's frame count may miss the frames it holds by this many (an edit list's
# last frame, a rounded duration) before its packets' times are not trusted to be its frames'.
COUNT_SLACK = 2


def presentation_times(reader: FrameReader, duration: float = 0.0) -> np.ndarray:
    """Every frame's presentation time (s, from the first; entry i for FrameReader's frame
    i), as training's tracks have them (`preprocessing.audio.frame_times`, a whole decode):
    the packets' times (`packet_times`, a few ms, nothing decoded), the same array for a
    well-formed file, when their number is within COUNT_SLACK of the frame count the file
    declares, or the file declares none (MKV, WebM, TS, FLV: OpenCV's count is then only an
    estimate); the decoded frames' (`frame_times`) where the packets cannot be read or
    disagree with a declared count (a truncated MP4; a stream whose packets are not one
    frame each); the nominal rate, i / fps, when neither can be read (or the reader has no
    file)."""
    from preprocessing.audio import declared_frame_count, frame_times, packet_times

    fps = float(reader.info.fps or 25.0)
    count = int(reader.info.frame_count or 0)
    path = getattr(reader, "path", None)
    if path is not None:
        try:
            times = packet_times(path)
            if not count or abs(len(times) - count) <= COUNT_SLACK or not declared_frame_count(path):
                return times
        except OSError:  # VideoReadError
            pass
        try:
            return frame_times(path)
        except OSError:  # VideoReadError
            pass
    return np.arange(count or int(duration * fps)) / fps


def frame_count(reader: FrameReader) -> int:
    """The video's frame count for sampling: the container's, or where it declares none
    (MKV, WebM, TS, FLV, MPEG-PS; OpenCV then estimates duration x fps, which at a variable
    frame rate overshoots: 103 for 74 frames) the number of its video packets (a demux,
    no decode), when that can be read."""
    count = int(reader.info.frame_count or 0)
    path = getattr(reader, "path", None)
    if path is None:
        return count
    from preprocessing.audio import declared_frame_count, packet_times

    if declared_frame_count(path):
        return count
    try:
        return len(packet_times(path)) or count
    except OSError:  # VideoReadError: the reader's estimate
        return count


@dataclass
class VideoFaces:
    """The crops of one video, per crop margin: for each (anchor frame, face) its crop
    and, on the clip anchors, the crops of the frames after it with the same rectangle
    (`clips[margin][k][offset]`, the anchor at offset 0)."""

    crops: dict[float, list[np.ndarray]] = field(default_factory=dict)
    clips: dict[float, list[list[np.ndarray]]] = field(default_factory=dict)
    fps: float = 30.0
    frames_decoded: int = 0
    frames_detected: int = 0
    detect_long_side: int = 0
    decode_s: float = 0.0
    detect_s: float = 0.0
    decoder_note: str | None = None  # set when the fallback decoder read the file
    # per margin, parallel to crops / clips: (frame, face index on that frame, box in pixels)
    keys: dict[float, list[tuple[int, int, list[float]]]] = field(default_factory=dict)
    clip_keys: dict[float, list[tuple[int, int, list[float]]]] = field(default_factory=dict)
    # with FaceExtractor(keep_thumbs=True), for explanations: anchor frame -> (downscaled frame, its scale)
    thumbs: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    # dissonance models: the MFCCs of the sound (None: no audio track), and per (size, margin,
    # segment length s, frames per segment) the main face's square crops of each segment:
    # [(start s, [crop per frame])]
    mfcc: np.ndarray | None = None
    segments: dict[tuple[int, float, float, int], list[tuple[float, list[np.ndarray]]]] = field(default_factory=dict)
    av: dict = field(default_factory=dict)  # model name -> {"mds", "segments": [{"start", "distance"}]}


class FaceExtractor:
    """Decode + detect + crop; one MTCNN per thread (detection is not thread-safe)."""

    def __init__(self, num_frames: int = 32, clip_len: int = 1, margins=(DEFAULT_MARGIN,),
                 detect_every: int = DEFAULT_DETECT_EVERY, detect_long_side: int = DEFAULT_DETECT_LONG_SIDE,
                 device: str | None = None, batch_size: int = 16, num_clips: int = 8,
                 retry_long_sides: tuple[int, ...] = DEFAULT_RETRY_LONG_SIDES, keep_thumbs: bool = False,
                 random_clips_seed: int | None = None, av_segments: tuple = (), max_segments: int = 10,
                 refine: bool = True, decode_threads: int | None = None):
        # clip_len: frames decoded from a clip anchor on (itself included), or a function of the fps
        self.num_frames, self.clip_len = num_frames, clip_len
        self.margins = sorted({float(m) for m in (margins if isinstance(margins, (list, tuple, set)) else [margins])})
        # A clip costs a sequence model clip_len frames: num_clips of them, spread over the
        # video, see as many frames as a frame model's 32 crops.
        self.num_clips = max(1, num_clips)
        self.detect_every, self.long_side, self.batch_size = max(1, detect_every), detect_long_side, batch_size
        self.retry_long_sides = tuple(retry_long_sides)
        self.refine = refine  # detect_every > 1: interpolated boxes refined by R-Net + O-Net
        self.decode_threads = decode_threads  # FrameReader's threads (None: one per core)
        self.device = device
        self.keep_thumbs = keep_thumbs  # keep a small copy of every anchor frame (explanation pages)
        # realism models: clips at random starts, from this seed and the file's name (`frame_plan`)
        self.random_clips_seed = random_clips_seed
        # dissonance models: (frames per segment, crop size, margin, segment length s) of each,
        # and how many seconds
        self.av_segments, self.max_segments = tuple(av_segments), max(1, int(max_segments))
        self._local = threading.local()

    def _detector(self) -> FaceDetector:
        if not hasattr(self._local, "detector"):
            self._local.detector = FaceDetector(device=self.device)
        return self._local.detector

    def detect_boxes(self, frames: dict[int, np.ndarray], anchors: list[int]) -> tuple[dict, int, int]:
        """({anchor: (n, 4) boxes in full-resolution pixels}, frames detected, long side used).

        Detects on every `detect_every`-th anchor and on the last one, downscaled so the
        long side is `detect_long_side`; the anchors between take their boxes from the
        two detected anchors around them (`interpolate_boxes`), each then moved onto the
        face in its own frame by MTCNN's R-Net and O-Net (`refine`; `FaceDetector.refine`:
        a box O-Net does not take for a face stays interpolated). When no face is found on
        any of them at that scale, the detection is retried at each of
        `retry_long_sides` in turn (small faces: a full-body shot), before the video is
        given up as faceless.
        """
        detect_on = detection_anchors(anchors, self.detect_every)
        h, w = frames[anchors[0]].shape[:2]
        found: dict[int, np.ndarray] = {}
        detected = 0
        long_sides = [self.long_side] + [s for s in self.retry_long_sides if s > self.long_side]
        for long_side in long_sides:
            scale = detection_scale(w, h, long_side)
            for i in range(0, len(detect_on), self.batch_size):
                chunk = detect_on[i:i + self.batch_size]
                dets = self._detector().detect([frames[k] for k in chunk], scale, min_face_size(w, h, scale))
                for idx, det in zip(chunk, dets):
                    found[idx] = det.boxes
            detected += len(detect_on)
            if any(len(b) for b in found.values()) or scale >= 1.0:
                break
        boxes = interpolate_boxes(found, anchors)
        between = [a for a in anchors if a not in found and len(boxes[a])]
        if self.refine and between:
            for i in range(0, len(between), self.batch_size * 4):
                chunk = between[i:i + self.batch_size * 4]
                for a, det in zip(chunk, self._detector().refine([frames[a] for a in chunk],
                                                                 [boxes[a] for a in chunk])):
                    boxes[a] = det.boxes
        return boxes, detected, long_side

    def span(self, fps: float) -> int:
        return int(self.clip_len(fps) if callable(self.clip_len) else self.clip_len)

    def plan(self, reader: FrameReader) -> tuple[list[int], set[int], set[int]]:
        """(anchors, clip anchors, frames to decode) of one video (`frame_plan`)."""
        rng = None
        if self.random_clips_seed is not None:
            rng = np.random.default_rng([self.random_clips_seed, zlib.crc32(Path(reader.path).name.encode())])
        return frame_plan(frame_count(reader), self.num_frames, self.span(reader.info.fps or 30.0),
                          self.num_clips, rng)

    def segment_plan(self, reader: FrameReader, duration: float) -> dict[tuple[float, int], list[tuple[float, list[int]]]]:
        """{(segment length, frames per segment): [(start s, frame indices)]}, one plan per
        pair the models ask for, cut by training's own rule (`preprocessing.audio.segments`,
        as `training.av_data` cuts the step-1 tracks): the consecutive whole windows of
        sound and picture, n frames each, the frame shown nearest to start + j * length / n
        within the window (ties: the earlier), by presentation time (`presentation_times`,
        so a variable frame rate lines up with the sound); the first max_segments seconds."""
        from preprocessing.audio import segments

        times = presentation_times(reader, duration)
        plans = {}
        for length, per in sorted({(float(s), int(t)) for t, *_, s in self.av_segments}):
            keep = int(self.max_segments / length + 1e-6)
            plans[(length, per)] = [(seg.start, list(seg.frames))
                                    for seg in segments(times, duration, length, per)[:keep]]
        return plans

    def __call__(self, path: Path) -> VideoFaces:
        t0 = time.time()
        reader = FrameReader(path, threads=self.decode_threads)
        anchors, clip_anchors, wanted = self.plan(reader)
        mfcc, plans = None, {}
        if self.av_segments:
            mfcc, duration = read_sound(path)
            if mfcc is not None:
                plans = self.segment_plan(reader, duration)
                wanted = wanted | {f for plan in plans.values() for _, fs in plan for f in fs}
        frames = dict(iter(reader.select(wanted)))
        out = VideoFaces(frames_decoded=reader.frames_decoded, decode_s=time.time() - t0,
                         decoder_note=decoder_counters(reader).get("note"))
        anchors = [a for a in anchors if a in frames]
        if not anchors:
            raise ValueError(f"none of the sampled frames could be decoded ({reader.frames_decoded} decoded)")

        t1 = time.time()
        boxes, out.frames_detected, out.detect_long_side = self.detect_boxes(frames, anchors)
        out.detect_s = time.time() - t1
        h, w = frames[anchors[0]].shape[:2]
        out.fps = float(reader.info.fps or 30.0)
        if self.keep_thumbs:
            from .explain import thumbnail

            out.thumbs = {a: thumbnail(frames[a]) for a in anchors}
        for margin in self.margins:
            crops, clips = out.crops.setdefault(margin, []), out.clips.setdefault(margin, [])
            keys, clip_keys = out.keys.setdefault(margin, []), out.clip_keys.setdefault(margin, [])
            for a in anchors:
                for k, box in enumerate(boxes[a]):
                    if min(box[2] - box[0], box[3] - box[1]) < 4:
                        continue  # the same faces for every margin: judged on the box itself
                    x1, y1, x2, y2 = crop_box(box, w, h, margin)
                    crops.append(frames[a][y1:y2, x1:x2])
                    keys.append((a, k, [round(float(v), 1) for v in box[:4]]))
                    if a in clip_anchors:
                        clip_keys.append(keys[-1])
                        clip, last = [], frames[a]
                        for j in range(self.span(out.fps)):
                            last = frames.get(a + j, last)  # past the end: the last decoded frame again
                            clip.append(last[y1:y2, x1:x2])
                        clips.append(clip)
        out.mfcc = mfcc
        if plans:
            from preprocessing.av import square_crop

            keys = np.array(anchors)
            for frames_per, size, margin, length in self.av_segments:
                crops = out.segments.setdefault((size, margin, float(length), int(frames_per)), [])
                if crops:
                    continue  # another model with the same crops
                for start, idx in plans[(float(length), int(frames_per))]:
                    seg = []
                    for f in idx:
                        frame = frames.get(f)
                        near = boxes[int(keys[np.argmin(np.abs(keys - f))])]
                        if frame is None or not len(near):
                            seg = None
                            break
                        main = max(near, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
                        seg.append(square_crop(frame, main, margin, size))
                    if seg:
                        crops.append((start, seg))
        return out


def read_sound(path: Path) -> tuple[np.ndarray | None, float]:
    """(MFCCs normalised as in training, duration s) of a video's sound; (None, 0) without one."""
    import tempfile

    from preprocessing.audio import extract_audio
    from training.av_data import _video_mfcc

    with tempfile.TemporaryDirectory(prefix="predict-audio-") as tmp:
        wav = Path(tmp) / "audio.wav"
        if extract_audio(path, wav) is None:
            return None, 0.0
        feats, duration = _video_mfcc.__wrapped__(str(wav))
    return feats, duration


def visual_input(m: LoadedModel, crops: list[np.ndarray]) -> torch.Tensor:
    """A segment's visual input for a dissonance model: its crops as the model was trained
    on them (T, 3, H, W), or, for a lip-landmark stream, the crops' lip features (T, F)
    (`training.lips`, the dataset's own rule; a frame dlib cannot fit repeats the last fit)."""
    if getattr(m.model.video, "input_features", None):
        from training.lips import crops_lip_features

        return torch.from_numpy(crops_lip_features(crops, m.margin)[0])
    return m.augment(crops)


@torch.inference_mode()
def score_av(faces: VideoFaces, m: LoadedModel, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """A dissonance model's P(FAKE) of the video, as a 1-element array (empty: it abstains,
    no sound or no segment); its MDS and per-segment distances go to faces.av[m.name]."""
    from training.av_data import mfcc_window, offset_windows

    length = m.av_segment_s
    per = m.cfg["data"]["seq_len"]
    segs = faces.segments.get((m.av_size, m.margin, length, int(per)), [])
    if faces.mfcc is None or not segs:
        faces.av[m.name] = {"mds": None, "segments": [], "abstained": "no sound" if faces.mfcc is None else
                            "no whole segment with a face"}
        return np.zeros(0)
    distances, fv, fa = [], [], []
    for i in range(0, len(segs), batch_size):
        chunk = segs[i:i + batch_size]
        x = torch.stack([visual_input(m, crops) for _, crops in chunk]).to(device)  # this model's frames
        a = torch.stack([torch.from_numpy(mfcc_window(faces.mfcc, start, length)).unsqueeze(0)
                         for start, _ in chunk])
        out = m.model(x, a.float().to(device))
        distances.append(out.distance.float().cpu().numpy())
        fv.append(out.video_features.float())
        fa.append(out.audio_features.float())
    d = np.concatenate(distances)
    extra = {}
    if m.model.offsets:  # model.offset_search: distance at offset 0 minus the best alignment's
        windows = offset_windows(faces.mfcc, [s for s, _ in segs], m.model.offsets, length)
        curve = m.model.offset_curve(torch.cat(fv), torch.from_numpy(windows).to(device))
        mds, d0, offset = m.model.offset_score(curve)
        extra = {"distance_at_0": round(d0, 5), "offset_s": offset}
    else:  # the paper's MDS, the mean segment distance; or one distance over the joined segments
        mds = (float(d.mean()) if m.model.mds == "segments"
               else float(m.model.video_distance(torch.cat(fv), torch.cat(fa))))
    prob = float(m.model.probability(torch.tensor(mds)))
    faces.av[m.name] = {"mds": round(mds, 5), "mds_over": m.model.mds + (" offsets" if m.model.offsets else ""),
                        **extra,
                        "segments": [{"start": s, "distance": round(float(x), 5)} for (s, _), x in zip(segs, d)]}
    return np.array([prob])


def _model_inputs(faces: VideoFaces, m: LoadedModel) -> list[list[np.ndarray]]:
    """The image lists one model scores: [crop] per face, or its clip's frames (the anchor
    repeated when no clip was decoded); with `flip_half`, every other item mirrored (NTech:
    the 1st, 3rd, ... face or clip)."""
    if m.is_sequence:
        offsets = m.clip_offsets(faces.fps)
        clips = faces.clips.get(m.margin) or []
        items = [[clip[min(o, len(clip) - 1)] for o in offsets] for clip in clips]
        items = items or [[c] * m.seq_len for c in faces.crops.get(m.margin, [])]
    else:
        items = [[c] for c in faces.crops.get(m.margin, [])]
    if m.flip_half:
        items = [[np.ascontiguousarray(f[:, ::-1]) for f in it] if k % 2 == 0 else it for k, it in enumerate(items)]
    return items


def _model_keys(faces: VideoFaces, m: LoadedModel) -> list[tuple[int, int, list[float]]]:
    """(frame, face, box) of each prediction `score_faces` makes for model m, in order: one
    per crop for a frame model; one per frame of each clip for a sequence model (the
    anchor's face and box, the frame anchor + offset)."""
    if m.is_sequence:
        offsets = m.clip_offsets(faces.fps)
        if faces.clips.get(m.margin):
            return [(f + o, k, box) for f, k, box in faces.clip_keys.get(m.margin, []) for o in offsets]
        return [(f, k, box) for f, k, box in faces.keys.get(m.margin, []) for _ in offsets]
    return list(faces.keys.get(m.margin, []))


def face_details(faces: VideoFaces, models: list[LoadedModel], preds: list[np.ndarray], strategy: str) -> dict:
    """The faces used (on how many sampled frames) and, per model, its video score and each
    prediction with its frame, face and box."""
    from .aggregation import aggregate

    out = {}
    for m, p in zip(models, preds):
        if m.is_av:  # one score per video, its MDS and per-second distances (the localisation)
            out[m.name] = {"video_score": float(p[0]) if p.size else None, **faces.av.get(m.name, {})}
            continue
        keys = _model_keys(faces, m)
        score = (float(np.mean(p)) if m.task == "mos" else float(aggregate(p, strategy))) if p.size else None
        out[m.name] = {"video_score": score,
                       "faces": [{"frame": int(f), "face": int(k), "box": box, "prob": round(float(x), 5)}
                                 for (f, k, box), x in zip(keys, p.tolist())]}
    first = faces.keys[min(faces.keys)]
    return {"faces": len(first), "frames": len({f for f, _, _ in first}), "models": out}


@torch.inference_mode()
def score_faces(faces: VideoFaces, models: list[LoadedModel], device: torch.device, batch_size: int = 32,
                dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """One array of probabilities per model: one per face for a frame model, one per frame
    of each clip for a sequence model (NTech's per-frame logits); for a realism model, one
    MOS per clip."""
    preds = []
    for m in models:
        if m.is_av:
            preds.append(score_av(faces, m, device, batch_size))
            continue
        items = _model_inputs(faces, m)
        probs = []
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            x = torch.stack([m.augment(it) for it in chunk])  # (B, T, 3, h, w)
            if not m.is_sequence:
                x = x[:, 0]
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext():
                logits = m.model(x)
            out = logits.float() if m.task == "mos" else torch.sigmoid(logits.float())
            probs.append(out.reshape(-1).cpu().numpy())
        preds.append(np.concatenate(probs) if probs else np.zeros(0))
    return preds


@dataclass
class PredictResult:
    rows: list[tuple[str, float]]
    errors: list[dict]
    seconds: float
    timings: dict
    notes: list[dict] = field(default_factory=list)  # scored, with a remark (the decoder used)
    details: dict = field(default_factory=dict)  # with details=True: video -> faces used, per-model scores
    task: str = "detect"  # detect: rows hold P(FAKE) | mos: rows hold a MOS


def predict_dir(test_dir: str | Path, checkpoints: list[str | Path], **kwargs) -> PredictResult:
    """Score every video under test_dir; returns one (filename relative to test_dir,
    probability) per video. Keyword arguments: those of `predict_videos`."""
    return predict_videos(dir_videos(test_dir), checkpoints, **kwargs)


def predict_videos(videos: list[tuple[str, Path]], checkpoints: list[str | Path], num_frames: int = 32,
                   strategy: str = "confident", batch_size: int = 32, device: str | None = None,
                   calibration: str | Path | None = None, workers: int = 2,
                   detect_every: int = DEFAULT_DETECT_EVERY, num_clips: int = 8, progress: bool = True,
                   detect_long_side: int = DEFAULT_DETECT_LONG_SIDE, details: bool = False,
                   explain_dir: str | Path | None = None, weights: list[float] | None = None,
                   mos_sequences: int = 10, seed: int = 0, amp: str = "auto") -> PredictResult:
    """Score (name, path) videos; returns one (name, probability) per video, in order.
    `details`: also each video's faces and every model's prediction per frame and face.
    `explain_dir`: also write an HTML page per video there (`inference.explain`), and index.html.
    Realism checkpoints: one (name, MOS) per video, from `mos_sequences` random clips per
    video (seeded by `seed` and the file name) and the models' `weights`. Realism and
    dissonance checkpoints detect faces on every anchor whatever `detect_every` says.
    `amp`: the precision of the face models (`amp_dtype`); detection and the dissonance
    models always run in float32."""
    from tqdm import tqdm

    from preprocessing.progress import progress_bar

    from .aggregation import ensemble, mos_ensemble
    from .calibration import apply_temperature, load_calibration

    t0 = time.time()
    names = [n for n, _ in videos]
    videos = [Path(p) for _, p in videos]
    dev = torch.device(select_device(device))
    model_dtype = amp_dtype(dev, amp)
    models = load_models(checkpoints, dev)
    if not models:
        raise ValueError("no checkpoints given")
    task = ensemble_task(models)
    if weights is not None and (len(weights) != len(models) or any(w < 0 for w in weights) or not sum(weights) > 0):
        raise ValueError(f"--weights: {len(models)} non-negative numbers, not all 0, one per model; got {weights}")
    if task == "mos" and (calibration or explain_dir is not None):
        raise ValueError("a temperature calibration and explanation pages are for detectors, not realism (MOS) models")
    if weights is not None and task == "detect" and strategy == "ntech":
        raise ValueError("--weights do not apply to the 'ntech' strategy (it pools every model's faces together)")
    fallback = FALLBACK if task == "detect" else float(mos_ensemble([np.array([float(m.model.prior)]) for m in models],
                                                                    weights))
    load_s = time.time() - t0
    temperature = load_calibration(calibration) if calibration else None
    if task == "mos":  # VRA: N runs of consecutive frames at random starts, each a clip anchor
        num_frames = num_clips = max(1, int(mos_sequences))
    if task == "mos" or any(m.is_av for m in models):
        # Realism: random clip starts are no track to interpolate along. Dissonance: its crops
        # follow the box from frame to frame, and the small shifts of refined boxes read as
        # mouth motion (bench/dissonance's motion-loudness baseline fell from 0.87 to 0.74 on GRID).
        detect_every = 1
    extract = FaceExtractor(num_frames, lambda fps: clip_span(models, fps), [m.margin for m in models], detect_every,
                            detect_long_side, num_clips=num_clips, device=str(dev) if dev.type == "cuda" else None,
                            keep_thumbs=explain_dir is not None, random_clips_seed=seed if task == "mos" else None,
                            av_segments=[(m.cfg["data"]["seq_len"], m.av_size, m.margin, m.av_segment_s)
                                         for m in models if m.is_av],
                            # several workers decode several videos at once: the cores shared among
                            # them (one each on 2 cores: 8% less decoding CPU than a thread per core each)
                            decode_threads=decode_threads_per_worker(workers))
    if explain_dir is not None:
        from . import explain

        explain_dir = Path(explain_dir)
        explain_dir.mkdir(parents=True, exist_ok=True)

    rows, errors, notes, info = [], [], [], {}
    timings = {"load_models_s": load_s, "decode_s": 0.0, "detect_s": 0.0, "model_s": 0.0, "frames_decoded": 0,
               "frames_detected": 0}
    if explain_dir is not None:
        timings["explain_s"] = 0.0
    bar = progress_bar(total=len(videos), desc="6_predict", unit="video", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead = max(1, workers) + 1
        futures = [pool.submit(extract, v) for v in videos[:ahead]]
        for i, path in enumerate(videos):
            if i + ahead < len(videos):
                futures.append(pool.submit(extract, videos[i + ahead]))
            name = names[i]
            prob, faces, page = fallback, None, None
            try:
                faces = futures[i].result()
                futures[i] = None  # free the frames
                timings["decode_s"] += faces.decode_s
                timings["detect_s"] += faces.detect_s
                timings["frames_decoded"] += faces.frames_decoded
                timings["frames_detected"] += faces.frames_detected
                if faces.decoder_note:
                    notes.append({"video": name, "note": faces.decoder_note})
                if not any(faces.crops.values()):
                    raise LookupError("no face found on the sampled frames")
                t1 = time.time()
                preds = score_faces(faces, models, dev, batch_size, model_dtype)
                timings["model_s"] += time.time() - t1
                if task == "mos":
                    score = mos_ensemble(preds, weights)
                    if score is None:
                        raise LookupError("no clip of a face on the sampled frames")
                    prob = float(score)
                else:
                    prob = float(ensemble(preds, strategy, weights))
                if temperature is not None:
                    prob = float(apply_temperature(np.array([prob]), temperature)[0])
                if details or explain_dir is not None:
                    info[name] = face_details(faces, models, preds, strategy)
                if explain_dir is not None:
                    t2 = time.time()
                    try:  # heatmaps of the face models (a dissonance model's evidence is in --json)
                        shown = [k for k, m in enumerate(models) if not m.is_av]
                        page = explain.explain_video(name, faces, [models[k] for k in shown], [preds[k] for k in shown],
                                                     prob, strategy=strategy, device=dev,
                                                     calibrated=temperature is not None, details=info[name])
                    except Exception as e:  # a picture that fails never changes the prediction
                        notes.append({"video": name, "note": f"no explanation page: {type(e).__name__}: {e}"})
                        page = explain.failure_page(name, f"the explanation failed ({type(e).__name__}: {e})",
                                                    faces, prob, strategy=strategy,
                                                    calibrated=temperature is not None, details=info[name])
                    timings["explain_s"] += time.time() - t2
            except Exception as e:  # every input still gets a row
                futures[i] = None
                reason = f"{type(e).__name__}: {e}"
                errors.append({"video": name, "error": reason, "prediction": fallback})
                tqdm.write(f"[6_predict] {name}: {reason} -> {fallback:g}", file=sys.stderr)
                if explain_dir is not None:
                    page = explain.failure_page(name, reason, faces)
            if page is not None:
                from preprocessing.artifacts import atomic_write_text

                try:
                    atomic_write_text(explain_dir / explain.page_name(name), page)
                except OSError as e:
                    notes.append({"video": name, "note": f"no explanation page: {type(e).__name__}: {e}"})
            if not details:
                info.pop(name, None)
            rows.append((name, prob if task == "mos" else min(1.0, max(0.0, prob))))
            bar.update(1)
    bar.close()
    if explain_dir is not None:
        explain.write_index(explain_dir, rows, {e["video"]: e["error"] for e in errors})
    return PredictResult(rows, errors, time.time() - t0, timings, notes, info, task)


def ensemble_task(models: list[LoadedModel]) -> str:
    """The one task of an ensemble's checkpoints: mixing detectors and realism models is an error."""
    tasks = {"detect" if m.task == "av" else m.task for m in models}  # a dissonance model gives P(FAKE) too
    if len(tasks) > 1:
        mos = [m.name for m in models if m.task == "mos"]
        detect = [m.name for m in models if m.task != "mos"]
        raise ValueError(f"MOS (realism) checkpoints {mos} and detection checkpoints {detect} cannot be mixed in "
                         f"one call: their scores are on different scales; predict with each set separately")
    return tasks.pop()


def write_submission(path: str | Path, rows: list[tuple[str, float]], column: str = "label") -> None:
    """`filename,label` (P(FAKE)), or `filename,mos` for realism models."""
    from preprocessing.artifacts import atomic_write_text

    atomic_write_text(path, f"filename,{column}\n" + "".join(f"{n},{p:.6f}\n" for n, p in rows))


def write_errors(path: str | Path, errors: list[dict]) -> None:
    from preprocessing.artifacts import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in errors))
