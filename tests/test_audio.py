"""preprocessing/audio.py: WAV extraction, MFCCs and timestamp alignment of 1-s segments
(the audio-visual dissonance detector, issue #11), on tiny videos made with the project's
ffmpeg binary (imageio-ffmpeg)."""
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from preprocessing.audio import (SAMPLE_RATE, AudioReadError, Segment, extract_audio, extract_audio_for_videos,
                                 frame_times, has_audio, mfcc, mfcc_window, read_wav, segments)
from preprocessing.video import FrameReader, VideoReadError, ffmpeg_exe

SINE = "sine=frequency=440:sample_rate=44100"
X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"]


def ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def video_src(rate, seconds):
    return ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate={rate}:duration={seconds}"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio_videos")
    v = {name: d / f"{name}.mp4" for name in
         ("fps25", "fps30", "silent", "vfr", "audio_late", "video_late", "garbage", "truncated")}
    ffmpeg(*video_src(25, 2), "-f", "lavfi", "-i", f"{SINE}:duration=2", *X264, "-c:a", "aac", v["fps25"])
    ffmpeg(*video_src(30, 2), "-f", "lavfi", "-i", f"{SINE}:duration=2", *X264, "-c:a", "aac", v["fps30"])
    ffmpeg(*video_src(25, 2), *X264, v["silent"])
    # Variable frame rate: 1 s at 25 fps, then 1 s at 10 fps, timestamps kept as they are.
    ffmpeg(*video_src(25, 1), *video_src(10, 1), "-f", "lavfi", "-i", f"{SINE}:duration=2",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
           "-fps_mode", "vfr", *X264, "-c:a", "aac", v["vfr"])
    # The sound track starts 0.5 s after the picture.
    ffmpeg(*video_src(25, 2), "-itsoffset", "0.5", "-f", "lavfi", "-i", f"{SINE}:duration=2",
           *X264, "-c:a", "aac", v["audio_late"])
    # The picture starts ~0.5 s after the sound, whose tone begins at 1.0 s.
    ffmpeg("-itsoffset", "0.5", *video_src(25, 2), "-f", "lavfi", "-i",
           "aevalsrc=sin(2*PI*440*t)*gte(t\\,1.0):s=44100:d=2.5", "-fps_mode", "passthrough",
           *X264, "-c:a", "aac", v["video_late"])
    v["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    data = v["fps25"].read_bytes()  # moov at the end: half a file has no index
    v["truncated"].write_bytes(data[: len(data) // 2])
    return v


def onset(x, rate, level=0.05):
    return int(np.argmax(np.abs(x) > level)) / rate


def first_frame_time(path):
    import av

    with av.open(str(path)) as c:
        f = next(c.decode(c.streams.video[0]))
        return float(f.pts * f.time_base)


# --------------------------------------------------------------------------- extraction
def test_extract_audio_writes_16k_mono_pcm_wav_of_the_track(videos, tmp_path):
    wav = tmp_path / "out" / "fps25.wav"
    duration = extract_audio(videos["fps25"], wav)
    assert abs(duration - 2.0) < 0.05
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() / w.getframerate() == pytest.approx(duration)
    x, rate = read_wav(wav)
    assert rate == SAMPLE_RATE == 16000
    assert x.dtype == np.float32 and x.ndim == 1 and np.abs(x).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * rate / len(x) - 440) < 3
    assert onset(x, rate) < 0.01
    assert sorted(p.name for p in wav.parent.iterdir()) == ["fps25.wav"]  # no temp file left
    assert has_audio(videos["fps25"])


def test_video_without_audio_returns_none_and_writes_nothing(videos, tmp_path):
    wav = tmp_path / "out" / "silent.wav"
    assert not has_audio(videos["silent"])
    assert extract_audio(videos["silent"], wav) is None
    assert not wav.exists() and not wav.parent.exists()


@pytest.mark.parametrize("name", ["garbage", "truncated"])
def test_corrupt_file_raises_an_error_naming_it(videos, tmp_path, name):
    wav = tmp_path / "out" / f"{name}.wav"
    with pytest.raises(AudioReadError, match=str(videos[name])):
        extract_audio(videos[name], wav)
    with pytest.raises(AudioReadError, match=str(videos[name])):
        has_audio(videos[name])
    with pytest.raises(VideoReadError, match=str(videos[name])):
        frame_times(videos[name])
    assert not wav.exists()
    missing = tmp_path / "missing.mp4"
    with pytest.raises(AudioReadError, match="file not found"):
        extract_audio(missing, wav)


def test_sound_is_shifted_onto_the_first_frames_clock(videos, tmp_path):
    # Sound 0.5 s late: the WAV starts with 0.5 s of silence.
    duration = extract_audio(videos["audio_late"], tmp_path / "late.wav")
    x, rate = read_wav(tmp_path / "late.wav")
    assert abs(onset(x, rate) - 0.5) < 0.03
    assert abs(np.abs(x[: int(0.45 * rate)]).max()) < 0.01
    assert abs(duration - 2.5) < 0.05
    # Picture late: the sound before the first frame is cut off.
    t_video = first_frame_time(videos["video_late"])
    assert t_video > 0.4
    duration = extract_audio(videos["video_late"], tmp_path / "early.wav")
    x, rate = read_wav(tmp_path / "early.wav")
    assert abs(onset(x, rate) - (1.0 - t_video)) < 0.03
    assert abs(duration - (2.5 - t_video)) < 0.05


def test_read_wav_averages_channels_and_rejects_non_wav(tmp_path):
    path = tmp_path / "stereo.wav"
    frames = np.array([[16384, -16384], [32767, 32767]], dtype="<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames.tobytes())
    x, rate = read_wav(path)
    assert rate == 8000 and x.dtype == np.float32
    np.testing.assert_allclose(x, [0.0, 32767 / 32768], atol=1e-6)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(AudioReadError, match=str(bad)):
        read_wav(bad)


# --------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("name,fps", [("fps25", 25), ("fps30", 30)])
def test_segments_at_a_constant_frame_rate(videos, tmp_path, name, fps):
    times = frame_times(videos[name])
    reader = FrameReader(videos[name])
    assert len(times) == sum(1 for _ in reader) == 2 * fps  # one entry per FrameReader index
    np.testing.assert_allclose(times, np.arange(2 * fps) / fps, atol=1e-3)
    duration = extract_audio(videos[name], tmp_path / f"{name}.wav")
    segs = segments(times, duration)
    assert [(s.index, s.start, s.end) for s in segs] == [(0, 0.0, 1.0), (1, 1.0, 2.0)]
    assert segs[0].frames == list(range(fps)) and segs[1].frames == list(range(fps, 2 * fps))
    # Sampled: exactly n per window, inside it, in time order.
    for s in segments(times, duration, frames_per_segment=30):
        assert len(s.frames) == 30 and s.frames == sorted(s.frames)
        assert set(s.frames) == set(range(s.index * fps, (s.index + 1) * fps))  # 25 fps: some repeat
    if fps == 30:
        assert segments(times, duration, frames_per_segment=30)[1].frames == list(range(30, 60))


def test_segments_of_a_variable_frame_rate_video_follow_timestamps(videos, tmp_path):
    times = frame_times(videos["vfr"])
    reader = FrameReader(videos["vfr"])
    assert len(times) == sum(1 for _ in reader) == 35
    expected = np.concatenate([np.arange(25) * 0.04, 1.0 + np.arange(10) * 0.1])
    np.testing.assert_allclose(times, expected, atol=1e-3)
    duration = extract_audio(videos["vfr"], tmp_path / "vfr.wav")
    segs = segments(times, duration)
    assert len(segs) == 2
    assert segs[0].frames == list(range(25)) and segs[1].frames == list(range(25, 35))
    # By index / average fps (17.5), the second window would start at frame 17 or 18.
    fps = reader.info.fps
    assert segs[1].frames[0] != int(np.ceil(1.0 * fps))
    sampled = segments(times, duration, frames_per_segment=25)[1].frames
    assert len(sampled) == 25 and set(sampled) == set(range(25, 35)) and sampled == sorted(sampled)


def test_segments_lie_inside_both_the_video_and_the_sound():
    times = np.arange(100) / 25.0  # a 4-s video
    assert [s.index for s in segments(times, 2.7)] == [0, 1]            # the sound is shorter
    assert [s.index for s in segments(times, 9.0)] == [0, 1, 2, 3]      # the video is shorter
    assert [s.index for s in segments(times, 2.995)] == [0, 1, 2]       # a few ms short: slack
    assert segments(times, 0.0) == [] and segments(np.array([]), 5.0) == []
    halves = segments(times, 9.0, length=0.5)
    assert len(halves) == 8 and halves[3].frames == list(range(38, 50))
    # Time-base rounding: a frame stamped 0.9999999 s is the first of the second window.
    segs = segments(np.array([0.0, 0.5, 0.9999999, 1.5]), 2.0)
    assert segs[0].frames == [0, 1] and segs[1].frames == [2, 3]


def test_a_window_without_frames_takes_the_frame_on_screen():
    times = np.array([0.0, 0.5, 2.2, 2.6])  # frame 1 is shown from 0.5 s to 2.2 s
    segs = segments(times, 3.0)
    assert segs[1] == Segment(1, 1.0, 2.0, [])
    assert segments(times, 3.0, frames_per_segment=4)[1].frames == [1, 1, 1, 1]
    assert segments(times, 3.0, frames_per_segment=4)[2].frames == [2, 2, 3, 3]


# --------------------------------------------------------------------------- MFCC
def test_mfcc_shape_and_window(videos, tmp_path):
    rng = np.random.default_rng(0)
    one_second = mfcc(rng.uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32), SAMPLE_RATE)
    assert one_second.shape == (99, 13) and one_second.dtype == np.float32
    assert np.isfinite(one_second).all()
    assert mfcc(rng.uniform(-0.5, 0.5, 44100), 44100).shape == (99, 13)  # nfft 2048 at 44.1 kHz

    duration = extract_audio(videos["fps25"], tmp_path / "a.wav")
    x, rate = read_wav(tmp_path / "a.wav")
    coeffs = mfcc(x, rate)
    assert abs(len(coeffs) - 100 * duration) <= 2 and coeffs.shape[1] == 13
    for s in segments(frame_times(videos["fps25"]), duration):
        window = mfcc_window(coeffs, s.start)
        assert window.shape == (13, 100) and window.dtype == np.float32
        np.testing.assert_array_equal(window, coeffs[100 * s.index: 100 * s.index + 100].T)
    # Short at the end: the last row repeats.
    tail = mfcc_window(coeffs[:150], 1.0)
    assert tail.shape == (13, 100)
    np.testing.assert_array_equal(tail[:, :50], coeffs[100:150].T)
    np.testing.assert_array_equal(tail[:, 50:], np.repeat(coeffs[149:150].T, 50, axis=1))
    assert mfcc_window(coeffs, 0.0, length=0.5).shape == (13, 50)


# --------------------------------------------------------------------------- the step helper
def test_extract_audio_for_videos(videos, tmp_path):
    from preprocessing.dataset import Video
    from conftest import make_opts

    data = Path(videos["fps25"]).parent
    vids = [Video(id=f"d/{n}", path=videos[n], label="REAL", original=None, original_present=False)
            for n in ("fps25", "silent", "garbage")]
    opts = make_opts(data, tmp_path / "work")
    result = extract_audio_for_videos(opts, vids)
    assert (result.done, result.noted, result.failed) == (2, 1, 1)
    assert (tmp_path / "work" / "audio" / "d" / "fps25.wav").exists()
    assert not (tmp_path / "work" / "audio" / "d" / "silent.wav").exists()
    notes = {e["video"]: e for e in result.error_entries}
    assert notes["d/silent"]["note"] == "no audio track" and str(videos["garbage"]) in notes["d/garbage"]["error"]
    again = extract_audio_for_videos(opts, vids)
    assert again.skipped == 1
