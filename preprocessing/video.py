"""Video decoding (OpenCV's FFmpeg backend) and encoding (the imageio-ffmpeg binary).

Decoding reads a video once, front to back, without seeking: seeking in long-GOP
H.264 is slow and, on some files, inexact. Frames that are not wanted are only
grabbed (no colour conversion, no copy).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np


class VideoReadError(IOError):
    """A video that cannot be decoded; the message says why in plain words."""


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # the container's estimate; the true count is known only after decoding


def _open(path: Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"empty file (0 bytes): {path}")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(f"cannot open as a video (corrupt, truncated or not a video): {path}")
    return cap


def probe(path: str | Path) -> VideoInfo:
    cap = _open(Path(path))
    try:
        return _info(cap)
    finally:
        cap.release()


def _info(cap: cv2.VideoCapture) -> VideoInfo:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 25.0  # some .mpg/.avi report nonsense; 25 is the common default
    return VideoInfo(
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=fps,
        frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
    )


class FrameReader:
    """Iterate over (index, RGB frame) for the wanted frame indices, in one pass.

    `wanted(idx) -> bool` selects frames; the reader stops after `max_index` if given.
    After iteration, `num_frames` is the number of frames actually decoded, which for a
    truncated file is less than the container claims.
    """

    def __init__(self, path: str | Path, wanted: Callable[[int], bool] | None = None,
                 max_index: int | None = None):
        self.path = Path(path)
        self.wanted = wanted or (lambda i: True)
        self.max_index = max_index
        self._cap = _open(self.path)
        self.info = _info(self._cap)
        self.num_frames = 0
        self.frames_decoded = 0

    def select(self, wanted: set[int]) -> "FrameReader":
        """Decode exactly these indices, stopping after the last: for callers that need
        the container's frame count (`info`) to choose them."""
        self.wanted = wanted.__contains__
        self.max_index = max(wanted) if wanted else -1
        return self

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        cap = self._cap
        try:
            idx = 0
            while self.max_index is None or idx <= self.max_index:
                if not cap.grab():
                    break
                self.frames_decoded += 1
                if self.wanted(idx):
                    ok, frame = cap.retrieve()
                    if ok and frame is not None:
                        if frame.ndim == 2:
                            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                        else:
                            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                        yield idx, frame
                idx += 1
            self.num_frames = idx
        finally:
            cap.release()
        if self.num_frames == 0 and (self.max_index is None or self.max_index >= 0):
            raise VideoReadError(f"no decodable frames: {self.path}")


def prefetch(iterable, size: int = 32) -> Iterator:
    """Iterate `iterable` in a background thread, `size` items ahead.

    Decoding (OpenCV) and detection (torch) both release the GIL, so the next frames
    are decoded while the current batch is detected. Errors reach the consumer; a
    consumer that stops early stops the producer too.
    """
    items: queue.Queue = queue.Queue(size)
    stop = threading.Event()
    done = object()
    failure: list[BaseException] = []

    def put(item) -> bool:
        """Wait for room, unless the consumer has stopped; True when the item went in."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as e:  # re-raised in the consumer
            failure.append(e)
        finally:
            put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                break
            yield item
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]


def read_frames(path: str | Path, indices: list[int] | set[int]) -> tuple[dict[int, np.ndarray], FrameReader]:
    """Decode the given frame indices (RGB uint8) in one pass; returns (frames, reader)."""
    wanted = set(int(i) for i in indices)
    reader = FrameReader(path).select(wanted)
    frames = dict(iter(reader)) if wanted else {}
    return frames, reader


# --------------------------------------------------------------------------- encoding
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_video(path: str | Path, frames: np.ndarray | list[np.ndarray], fps: float,
                 crf: int = 20, preset: str = "veryfast", tune: str | None = None) -> None:
    """Encode RGB uint8 frames (T, H, W, 3) to H.264 yuv420p with ffmpeg.

    Bit-exact flags and one thread make the output byte-identical for identical input,
    which keeps the generated sample dataset deterministic.
    """
    import ffmpeg

    frames = np.ascontiguousarray(np.stack(frames) if isinstance(frames, list) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_kwargs = dict(vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=preset,
                      threads=1, map_metadata=-1, fflags="+bitexact", movflags="+faststart")
    out_kwargs["flags:v"] = "+bitexact"
    if tune:
        out_kwargs["tune"] = tune
    stream = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
              .output(str(path), **out_kwargs).overwrite_output())
    try:
        stream.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        raise RuntimeError(f"ffmpeg failed to encode {path}: {e.stderr.decode(errors='replace')[-800:]}") from e
