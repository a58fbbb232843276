"""Video decoding (OpenCV's FFmpeg backend, PyAV as the fallback) and encoding (the
imageio-ffmpeg binary).

Decoding reads a video once, front to back, without seeking: seeking in long-GOP
H.264 is slow and, on some files, inexact. Frames that are not wanted are only
grabbed (no colour conversion, no copy). Frames stream: memory does not grow with
the length of the video.

One module serves every step (0, 1, 6, evaluation), so a video decodes the same way
everywhere. OpenCV is the fast path. When it cannot open a file or decodes no frame
of it (the OpenCV wheel's FFmpeg has no AV1 decoder), PyAV (`av`, FFmpeg with dav1d)
decodes it; `FrameReader.decoder` says which one did. Rotation metadata (phone videos)
is applied by both, identically: OpenCV rotates by itself, PyAV's frames are turned
by their display-matrix `rotation` (tests/test_video.py checks they agree).
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


DEFAULT_DECODER = "opencv"
FALLBACK_DECODER = "pyav"


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # the container's estimate; the true count is known only after decoding


def _open(path: Path, threads: int | None = None) -> cv2.VideoCapture:
    """OpenCV's capture of a file `_check_file` has passed; `threads`: FFmpeg's decoding
    threads (None: its own choice, one per core)."""
    params = [cv2.CAP_PROP_N_THREADS, int(threads)] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(f"cannot open as a video (corrupt, truncated or not a video): {path}")
    return cap


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"empty file (0 bytes): {path}")


class _PyAVVideo:
    """The fallback decoder: PyAV's FFmpeg (with dav1d for AV1), frames turned upright."""

    def __init__(self, path: Path, threads: int | None = None):
        self.threads = threads
        try:
            import av
        except ImportError as e:  # pinned in requirements.txt; say what is missing
            raise VideoReadError(f"OpenCV cannot decode {path} and the fallback decoder PyAV "
                                 f"is not installed (pip install av)") from e
        self.av, self.path = av, path
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"no video stream: {path}")
                stream = container.streams.video[0]
                first = next(container.decode(stream), None)
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                count = int(stream.frames or 0)
                if not count and fps > 0:
                    seconds = (float(stream.duration * stream.time_base) if stream.duration
                               else (container.duration or 0) / av.time_base)
                    count = int(round(seconds * fps))
        except (av.error.FFmpegError, StopIteration) as e:
            raise VideoReadError(f"cannot open as a video (corrupt, truncated or not a video; OpenCV and PyAV "
                                 f"tried): {path} ({e})") from e
        if first is None:
            raise VideoReadError(f"no decodable frames (OpenCV and PyAV): {path}")
        self.rotation = int(getattr(first, "rotation", 0) or 0) % 360
        w, h = first.width, first.height
        if self.rotation in (90, 270):
            w, h = h, w
        self.info = VideoInfo(width=w, height=h, fps=_sane_fps(fps), frame_count=max(count, 0))

    def frames(self, stop: int | None) -> Iterator[tuple[int, object]]:
        """(index, av.VideoFrame) for every frame up to `stop` (inclusive), streamed. A
        decoding error ends the stream there, as OpenCV ends a truncated file."""
        with self.av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.thread_count = int(self.threads)
            decoded = container.decode(stream)
            idx = 0
            while stop is None or idx <= stop:
                try:
                    frame = next(decoded)
                except (StopIteration, self.av.error.FFmpegError):
                    return
                yield idx, frame
                idx += 1

    def to_rgb(self, frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        k = self.rotation // 90  # PyAV's rotation is counter-clockwise, as np.rot90 turns
        return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and frame count, from OpenCV, or PyAV when OpenCV cannot open it
    (FrameReader's choice of decoder; nothing is decoded)."""
    reader = FrameReader(path)
    reader.close()
    return reader.info


def _sane_fps(fps: float) -> float:
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        return 25.0  # some .mpg/.avi report nonsense; 25 is the common default
    return float(fps)


def _info(cap: cv2.VideoCapture) -> VideoInfo:
    fps = _sane_fps(float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
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
    truncated file is less than the container claims. `decoder` is "opencv", or "pyav"
    when OpenCV could not open the file or decoded no frame of it (`fallback_reason`).
    """

    def __init__(self, path: str | Path, wanted: Callable[[int], bool] | None = None,
                 max_index: int | None = None, decoder: str | None = None, threads: int | None = None):
        """`decoder`: None tries OpenCV then PyAV; "pyav" goes straight to PyAV (tests,
        bench/decode.py). `threads`: the decoder's threads (None: one per core, the fastest
        for one video; where several videos decode at once, their share of the cores, as
        6_predict's workers get from `inference.predictor.decode_threads_per_worker`)."""
        if decoder not in (None, DEFAULT_DECODER, FALLBACK_DECODER):
            raise ValueError(f"decoder must be {DEFAULT_DECODER!r} or {FALLBACK_DECODER!r}, got {decoder!r}")
        self.path = Path(path)
        self.wanted = wanted or (lambda i: True)
        self.max_index = max_index
        self.num_frames = 0
        self.frames_decoded = 0
        self.decoder, self.fallback_reason = DEFAULT_DECODER, None
        self.threads = threads
        self._cap, self._pyav = None, None
        _check_file(self.path)
        if decoder == FALLBACK_DECODER:
            self._use_fallback("asked for")
            return
        try:
            self._cap = _open(self.path, threads)
            self.info = _info(self._cap)
        except VideoReadError as e:
            self._use_fallback(str(e))

    def _use_fallback(self, reason: str) -> None:
        self.close()
        self._pyav = _PyAVVideo(self.path, self.threads)  # a VideoReadError when PyAV cannot decode it either
        self.info = self._pyav.info
        self.decoder, self.fallback_reason = FALLBACK_DECODER, reason

    def close(self) -> None:
        """Release OpenCV's capture without decoding (iteration releases it by itself)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def select(self, wanted: set[int]) -> "FrameReader":
        """Decode exactly these indices, stopping after the last: for callers that need
        the container's frame count (`info`) to choose them."""
        self.wanted = wanted.__contains__
        self.max_index = max(wanted) if wanted else -1
        return self

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.max_index is not None and self.max_index < 0:
            return
        if self._cap is not None:
            cap, idx = self._cap, 0
            try:
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
            finally:
                self.close()
            if idx > 0:
                self.num_frames = idx
                return
            self._use_fallback("OpenCV decoded no frame (its FFmpeg lacks this codec, e.g. AV1)")
        idx = -1
        for idx, frame in self._pyav.frames(self.max_index):
            self.frames_decoded += 1
            if self.wanted(idx):
                yield idx, self._pyav.to_rgb(frame)
        self.num_frames = idx + 1
        if self.num_frames == 0:
            raise VideoReadError(f"no decodable frames (OpenCV and PyAV): {self.path}")


def decoder_counters(reader: "FrameReader") -> dict:
    """A step's counters and note naming the decoder, when it is not the default: the
    errors file then says which files needed the fallback, and why."""
    if reader.decoder == DEFAULT_DECODER:
        return {}
    return {f"decoded_with_{reader.decoder}": 1, "note": f"decoded with {reader.decoder} ({reader.fallback_reason})"}


def add_note(counters: dict, note: str | None) -> dict:
    """Append a note to the counters' note (several reasons: joined with '; ')."""
    if note:
        counters["note"] = f"{counters['note']}; {note}" if counters.get("note") else note
    return counters


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
                 crf: int = 20, preset: str = "veryfast", tune: str | None = None,
                 audio: np.ndarray | None = None, sample_rate: int = 16000) -> None:
    """Encode RGB uint8 frames (T, H, W, 3) to H.264 yuv420p with ffmpeg.

    Bit-exact flags and one thread make the output byte-identical for identical input,
    which keeps the generated sample dataset deterministic.

    `audio`: a mono sound track (1-D float in [-1, 1], or int16) at `sample_rate` Hz,
    muxed as AAC-LC (64 kb/s, mono, bit-exact flags) next to the video. It is cut or
    padded with silence to the video's length (T / fps seconds), goes to ffmpeg through
    a temporary 16-bit WAV, and the mp4 is written to a temporary name in the same folder
    and renamed into place, so an interrupted run leaves no half-written file. The video
    stream is the same H.264 bitstream as without audio (same frames, same settings).
    Without `audio`, nothing changes: same command, same bytes.
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
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
    if audio is not None:
        _encode_with_audio(path, frames, fps, video, out_kwargs, audio, sample_rate)
        return
    stream = video.output(str(path), **out_kwargs).overwrite_output()
    try:
        stream.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        raise RuntimeError(f"ffmpeg failed to encode {path}: {e.stderr.decode(errors='replace')[-800:]}") from e


def _pcm16(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """A mono track as int16 of exactly `num_samples` (cut, or padded with silence)."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"expected a non-empty 1-D mono audio track, got shape {audio.shape}")
    if audio.dtype == np.int16:
        pcm = audio
    elif np.issubdtype(audio.dtype, np.floating):
        pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    else:
        raise ValueError(f"audio must be float (in [-1, 1]) or int16, got {audio.dtype}")
    out = np.zeros(num_samples, np.int16)
    out[:min(num_samples, pcm.size)] = pcm[:num_samples]
    return out


def _encode_with_audio(path: Path, frames: np.ndarray, fps: float, video, out_kwargs: dict,
                       audio: np.ndarray, sample_rate: int) -> None:
    import os
    import tempfile
    import wave

    import ffmpeg

    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    pcm = _pcm16(audio, int(round(len(frames) * sample_rate / fps)))
    out_kwargs = {**out_kwargs, "acodec": "aac", "b:a": "64k", "ac": 1, "ar": sample_rate,
                  "flags:a": "+bitexact"}
    with tempfile.TemporaryDirectory(prefix=".encode_", dir=path.parent) as tmp:
        wav, out = Path(tmp) / "audio.wav", Path(tmp) / ("video" + (path.suffix or ".mp4"))
        with wave.open(str(wav), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes(pcm.astype("<i2").tobytes())
        stream = ffmpeg.output(video, ffmpeg.input(str(wav)), str(out), **out_kwargs).overwrite_output()
        try:
            stream.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as e:
            raise RuntimeError(f"ffmpeg failed to encode {path}: {e.stderr.decode(errors='replace')[-800:]}") from e
        os.replace(out, path)
