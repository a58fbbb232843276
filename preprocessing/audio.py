"""Audio for the audio-visual dissonance detector (Chugh et al., "Not made for each other",
issue #11): the sound track as a WAV, its MFCCs, and 1-second segments that pair the MFCCs
of a second of sound with the video frames shown during that same second.

Formats
    WAV    16 kHz, mono, 16-bit PCM (`SAMPLE_RATE`), written by the imageio-ffmpeg binary
           (`video.ffmpeg_exe()`, no system ffmpeg needed) from the video's first audio
           track, atomically (a hidden temp file in the same folder, then a rename).
           `read_wav` gives it back as float32 in [-1, 1].
    MFCC   `python_speech_features.mfcc` (pinned 0.6), as in the paper: 13 coefficients,
           25 ms windows every 10 ms, so one row per 10 ms (~99-100 rows per second), the
           first coefficient replaced by the log frame energy; float32 (n_frames, 13).
           Row i covers the samples [i * 10 ms, i * 10 ms + 25 ms).

Why 16 kHz: speech carries its information below 8 kHz (the Nyquist limit at 16 kHz), the
26 mel filters of the MFCCs span 0-8 kHz, and it is the rate the paper's MFCC settings were
made for (a 25 ms window is 400 samples, a 512-point FFT). DFDC tracks are 44.1/48 kHz
stereo; downmixing and resampling them once makes every video's features comparable and the
WAVs 6x smaller.

Alignment by timestamps, not by frame rate
    Frames are matched to sound by their presentation times, never by index / fps: DFDC and
    other collections hold 15-60 fps and variable-frame-rate (phone) videos, where frame i
    is not shown at i / fps. `frame_times` decodes a video (PyAV) and returns every frame's
    pts * time_base relative to the first frame, in decoding order: entry i is the frame
    `video.FrameReader` yields as index i. `extract_audio` shifts the sound onto the same
    clock: sample 0 of the WAV is the sound playing when the first video frame is shown
    (audio that starts later is preceded by silence, audio that starts earlier is trimmed),
    so a time t means the same instant in the frame times and in the WAV.
    `segments` then cuts consecutive, non-overlapping windows [k, k + 1) seconds that lie
    inside both the video and the sound, each with the indices of the frames whose
    timestamps fall in it; `mfcc_window` gives the window's MFCC rows, (13, 100).

Typical use::

    duration = extract_audio(video, wav)           # None: no sound track
    signal, rate = read_wav(wav)
    coeffs = mfcc(signal, rate)                    # (n, 13)
    for seg in segments(frame_times(video), duration, frames_per_segment=30):
        audio = mfcc_window(coeffs, seg.start)     # (13, 100)
        faces = [crops[i] for i in seg.frames]     # the same second of video
"""
from __future__ import annotations

import os
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import _tmp_sibling
from .video import VideoReadError, ffmpeg_exe
from .video import _check_file as _check_video_file

SAMPLE_RATE = 16000
NUM_CEP = 13
WIN_LEN = 0.025   # seconds
WIN_STEP = 0.01   # seconds: 100 MFCC rows per second
SEGMENT_SECONDS = 1.0
# A window may end this much after the video's last frame or the sound's last sample and
# still count as inside: timestamps are rounded to the container's time base, and AAC
# tracks end a few ms early or late. The missing MFCC rows are edge-padded (mfcc_window).
SEGMENT_SLACK = 0.01
AUDIO_DIR = "audio"


class AudioReadError(IOError):
    """A video whose sound cannot be read; the message names the file and says why."""


# --------------------------------------------------------------------------- probing
def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioReadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioReadError(f"empty file (0 bytes): {path}")


def _open_container(path: Path):
    import av

    _check_file(path)
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise AudioReadError(f"cannot open (corrupt, truncated or not a media file): {path} ({e})") from e


def has_audio(video_path: str | os.PathLike) -> bool:
    """Whether the file has an audio stream (container metadata only, nothing decoded).
    Raises AudioReadError, naming the file, when it cannot be opened at all."""
    path = Path(video_path)
    with _open_container(path) as container:
        return bool(container.streams.audio)


def _first_time(container, stream) -> float | None:
    """Presentation time (s) of the stream's first decoded frame; the stream's start time
    when no frame decodes or it has no pts; None when neither is known."""
    import av

    try:
        for frame in container.decode(stream):
            if frame.pts is not None:
                return float(frame.pts * frame.time_base)
            break
    except av.error.FFmpegError:
        pass
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    return None


def _audio_offset(path: Path) -> float | None:
    """Seconds from the first video frame to the first audio sample (negative: the sound
    starts before the picture); None when the file has no audio stream."""
    with _open_container(path) as container:
        if not container.streams.audio:
            return None
        t_audio = _first_time(container, container.streams.audio[0])
    if t_audio is None:
        return 0.0
    with _open_container(path) as container:
        if not container.streams.video:  # a sound-only file: nothing to align to
            return 0.0
        t_video = _first_time(container, container.streams.video[0])
    return 0.0 if t_video is None else t_audio - t_video


# --------------------------------------------------------------------------- extraction
def extract_audio(video_path: str | os.PathLike, wav_path: str | os.PathLike,
                  sample_rate: int = SAMPLE_RATE) -> float | None:
    """Write the video's first audio track to `wav_path` as mono 16-bit PCM WAV at
    `sample_rate`, aligned to the first video frame (see the module docstring), and
    return its duration in seconds.

    Returns None, and writes nothing, when the video has no audio track. Raises
    AudioReadError naming the video when it is missing, empty, corrupt, or its track
    decodes to no sound. The WAV appears whole or not at all (temp file + rename)."""
    path, wav_path = Path(video_path), Path(wav_path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    offset = _audio_offset(path)
    if offset is None:
        return None
    shift = int(round(offset * sample_rate))
    filters = [f"aresample={sample_rate}:async=1"]  # async: timestamp gaps become silence
    if shift > 0:
        filters.append(f"adelay=delays={shift}S:all=1")
    elif shift < 0:
        filters.append(f"atrim=start_sample={-shift}")

    wav_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in wav_path.parent.glob(f".{wav_path.name}.tmp-*"):  # a killed run's leftovers
        stale.unlink(missing_ok=True)
    tmp = _tmp_sibling(wav_path)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(path),
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-af", ",".join(filters),
           "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le",
           "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
           "-f", "wav", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-800:]
            raise AudioReadError(f"ffmpeg cannot extract the audio of {path}: {err or f'exit {proc.returncode}'}")
        try:
            with wave.open(str(tmp), "rb") as w:
                frames, rate = w.getnframes(), w.getframerate()
        except (wave.Error, EOFError) as e:
            raise AudioReadError(f"ffmpeg wrote an unreadable WAV for {path}: {e}") from e
        if frames == 0:
            raise AudioReadError(f"the audio track of {path} decodes to no samples (corrupt or truncated)")
        os.replace(tmp, wav_path)
    finally:
        tmp.unlink(missing_ok=True)
    return frames / rate


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(samples as float32 in [-1, 1], sample rate) of a PCM WAV; several channels are
    averaged to one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing WAV {path}")
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise AudioReadError(f"unreadable WAV {path}: {e}") from e
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise AudioReadError(f"unsupported WAV sample width {8 * width} bits: {path}")
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), rate


# --------------------------------------------------------------------------- MFCC
def mfcc(signal: np.ndarray, sample_rate: int, numcep: int = NUM_CEP, winlen: float = WIN_LEN,
         winstep: float = WIN_STEP, nfft: int | None = None) -> np.ndarray:
    """MFCCs of a mono signal with python_speech_features (the paper's features):
    float32 (n_frames, numcep), n_frames = 1 + ceil((len - winlen * rate) / (winstep * rate))
    (~100 per second at the default 10 ms step). `nfft` None: the smallest power of two
    that holds a window (512 at 16 kHz, 2048 at 44.1 kHz), so no sample is dropped.

    Only the first coefficient (the log energy) depends on the signal's scale: pass
    read_wav's [-1, 1] floats everywhere (int16 samples would shift it by log(32768^2))."""
    from python_speech_features import mfcc as psf_mfcc

    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(f"expected a mono signal (1-D), got shape {signal.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    window = max(1, int(round(winlen * sample_rate)))
    if nfft is None:
        nfft = 1 << (window - 1).bit_length()
    elif nfft < window:  # python_speech_features would truncate each window (and log.warn, gone in 3.13)
        raise ValueError(f"nfft {nfft} is shorter than a window ({window} samples at {sample_rate} Hz)")
    feats = psf_mfcc(signal.astype(np.float64), samplerate=sample_rate, winlen=winlen,
                     winstep=winstep, numcep=numcep, nfft=nfft)
    return np.ascontiguousarray(feats, dtype=np.float32)


def mfcc_window(mfccs: np.ndarray, start: float, length: float = SEGMENT_SECONDS,
                winstep: float = WIN_STEP) -> np.ndarray:
    """The MFCC rows of the window [start, start + length) seconds, transposed for a
    1-channel CNN input: (numcep, round(length / winstep)), e.g. (13, 100). Rows past the
    end of the sound repeat its last row (a track that ends a few ms early)."""
    mfccs = np.asarray(mfccs)
    if mfccs.ndim != 2 or len(mfccs) == 0:
        raise ValueError(f"expected MFCCs (n_frames > 0, numcep), got shape {mfccs.shape}")
    if start < 0 or length <= 0:
        raise ValueError(f"need start >= 0 and length > 0, got start={start}, length={length}")
    first, n = int(round(start / winstep)), int(round(length / winstep))
    rows = np.clip(np.arange(first, first + n), 0, len(mfccs) - 1)
    return np.ascontiguousarray(mfccs[rows].T, dtype=np.float32)


# --------------------------------------------------------------------------- alignment
def frame_times(video_path: str | os.PathLike) -> np.ndarray:
    """Presentation time (seconds, float64) of every decoded frame relative to the first,
    in decoding order: entry i belongs to the frame FrameReader yields as index i, at any
    frame rate, constant or variable. Decodes the whole video (PyAV, the frames are not
    converted). A frame without a pts is placed one nominal frame after the previous one;
    a decoding error ends the list there, as FrameReader ends a truncated file."""
    import av

    path = Path(video_path)
    _check_video_file(path)
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"no video stream: {path}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            step = 1.0 / float(rate) if rate else 1.0 / 25
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    if not times:
                        raise
                    break
                if frame.pts is not None:
                    times.append(float(frame.pts * frame.time_base))
                else:
                    times.append(times[-1] + step if times else 0.0)
    except av.error.FFmpegError as e:
        raise VideoReadError(f"cannot decode (corrupt, truncated or not a video): {path} ({e})") from e
    if not times:
        raise VideoReadError(f"no decodable frames: {path}")
    t = np.asarray(times, dtype=np.float64)
    return t - t[0]


def packet_times(video_path: str | os.PathLike) -> np.ndarray:
    """`frame_times` without decoding: the video stream's packets are only demuxed (PyAV),
    their pts * time_base sorted (packets come in decoding order, B-frames after the frames
    they refer to; frames come out in presentation order) and taken relative to the first.
    For a well-formed file (one frame per packet) it is the same array as frame_times,
    entry i for the frame FrameReader yields as index i, at a few milliseconds per video
    instead of a whole decode. Packets without a pts (the empty flush packet; raw streams
    such as .h264, whose packets have none at all) and packets an MP4/MOV edit list cuts
    (flagged discard; the decoder drops their frames too) are left out. Where a packet is
    not one frame (field-coded video), the lengths differ: a caller that needs entry i to
    be frame i compares the length with the container's frame count and falls back to
    frame_times when they disagree (inference.predictor.FaceExtractor.segment_plan does).
    Raises VideoReadError, as frame_times, for a missing, empty or unreadable file, one
    without a video stream, or one without a single timed packet."""
    import av

    path = Path(video_path)
    _check_video_file(path)
    pts: list[int] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"no video stream: {path}")
            stream = container.streams.video[0]
            base = stream.time_base
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    if not pts:
                        raise
                    break  # a truncated file: what came before it
                # no pts: the empty flush packet; discard: cut by an edit list (MP4/MOV),
                # the decoder drops its frame too
                if packet.pts is not None and packet.size > 0 and not packet.is_discard:
                    pts.append(int(packet.pts))
    except av.error.FFmpegError as e:
        raise VideoReadError(f"cannot read (corrupt, truncated or not a video): {path} ({e})") from e
    if not pts or base is None:
        raise VideoReadError(f"no timed video packets: {path}")
    t = np.sort(np.asarray(pts, dtype=np.int64))
    return (t - t[0]).astype(np.float64) * float(base)


def declared_frame_count(video_path: str | os.PathLike) -> int:
    """The frame count the container declares for its first video stream (MP4/MOV/AVI
    store it), 0 when it declares none (MKV, WebM, TS, FLV: a reader's count is then an
    estimate from the duration) or the file cannot be opened."""
    import av

    try:
        with av.open(str(video_path)) as container:
            streams = container.streams.video
            return int(streams[0].frames or 0) if streams else 0
    except (av.error.FFmpegError, OSError):
        return 0


@dataclass
class Segment:
    """One window [start, end) seconds and the video frames shown in it."""

    index: int
    start: float
    end: float
    frames: list[int] = field(default_factory=list)


def video_end(times: np.ndarray) -> float:
    """When the last frame stops being shown: its time plus the interval before it (the
    container does not say how long a last frame lasts)."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) == 0:
        return 0.0
    if len(times) == 1:
        return float(times[0])
    return float(times[-1] + max(times[-1] - times[-2], 0.0))


def segments(times: np.ndarray, duration: float, length: float = SEGMENT_SECONDS,
             frames_per_segment: int | None = None, slack: float = SEGMENT_SLACK) -> list[Segment]:
    """Consecutive non-overlapping windows [k * length, (k + 1) * length) seconds that lie
    inside both the video (frame `times`, from frame_times) and the sound (`duration`, from
    extract_audio), each with the indices of the frames whose time falls in it.

    `frames_per_segment` None: every frame in the window, whatever the frame rate.
    Otherwise exactly that many indices, for the times start + j * length / n: the frame
    of the window nearest in time (ties: the earlier), repeated when the window holds
    fewer frames; a window without any frame (a frozen picture) takes the frame still on
    screen. A window may overrun the ends by `slack` seconds (see SEGMENT_SLACK)."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"expected 1-D frame times, got shape {times.shape}")
    if length <= 0:
        raise ValueError(f"length must be > 0, got {length}")
    if frames_per_segment is not None and frames_per_segment < 1:
        raise ValueError(f"frames_per_segment must be >= 1, got {frames_per_segment}")
    if len(times) == 0 or duration is None or duration <= 0:
        return []
    if np.any(np.diff(times) < 0):
        raise ValueError("frame times must be non-decreasing (decoding order)")
    end = min(video_end(times), float(duration)) + slack
    eps = 1e-4  # time-base (and float32) rounding: a frame at 0.99999 s belongs to the window at 1 s
    out: list[Segment] = []
    k = 0
    while (k + 1) * length <= end:
        start, stop = k * length, (k + 1) * length
        lo = int(np.searchsorted(times, start - eps, side="left"))
        hi = int(np.searchsorted(times, stop - eps, side="left"))
        if frames_per_segment is None:
            frames = list(range(lo, hi))
        else:
            targets = start + np.arange(frames_per_segment) * (length / frames_per_segment)
            if hi > lo:
                frames = [_nearest(times, lo, hi, t) for t in targets]
            else:  # no frame starts in this window: the previous one is still shown
                frames = [max(lo - 1, 0)] * frames_per_segment
        out.append(Segment(index=k, start=start, end=stop, frames=frames))
        k += 1
    return out


def _nearest(times: np.ndarray, lo: int, hi: int, t: float) -> int:
    """Index in [lo, hi) of the frame nearest to time t (ties: the earlier)."""
    i = int(np.searchsorted(times, t, side="left"))
    i = min(max(i, lo), hi - 1)
    if i > lo and t - times[i - 1] <= times[i] - t + 1e-9:
        return i - 1
    return i


# --------------------------------------------------------------------------- a step
def audio_path(work_dir: str | os.PathLike, video_id: str) -> Path:
    """WORK_DIR/audio/{id}.wav."""
    return Path(work_dir) / AUDIO_DIR / f"{video_id}.wav"


def _process(task) -> dict:
    from .runner import SkipVideo

    p = task.payload
    duration = extract_audio(p["path"], p["out"], p["sample_rate"])
    if duration is None:
        raise SkipVideo("no audio track")
    return {"audio_seconds": round(duration, 3)}


def extract_audio_for_videos(opts, videos=None, sample_rate: int = SAMPLE_RATE):
    """Write WORK_DIR/audio/{id}.wav for every video of the dataset (or `videos`, a list
    of dataset.Video), with the runner's sharding, skipping, workers and errors file.
    Videos without sound finish with the note "no audio track"; an unreadable one is a
    failure. Returns the runner's StepResult (done, skipped, failed, noted)."""
    from .dataset import load_dataset
    from .runner import StepError, Task, run_tasks

    errors: list[dict] = []
    if videos is None:
        dataset = load_dataset(opts.data_dir)
        videos, errors = dataset.videos, dataset.errors
    if not videos:
        raise StepError(f"no usable videos under {opts.data_dir}")
    tasks = [Task(v.id, v.group, {"path": str(v.path), "out": str(audio_path(opts.work_dir, v.id)),
                                  "sample_rate": sample_rate}) for v in videos]
    return run_tasks("extract_audio", tasks, _process, lambda t: Path(t.payload["out"]).exists(),
                     opts, preexisting_errors=errors)
