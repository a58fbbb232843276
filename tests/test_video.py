import numpy as np
import pytest

from preprocessing.video import FrameReader, VideoReadError, encode_video, probe, read_frames
from helpers import portrait_clip, to_mpg, truncate


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    frames = portrait_clip(path, frames=20)
    return path, frames


def test_encode_decode_roundtrip(clip):
    path, frames = clip
    info = probe(path)
    assert (info.width, info.height) == (256, 192) and info.fps == pytest.approx(15)
    reader = FrameReader(path)
    decoded = dict(iter(reader))
    assert reader.num_frames == 20 == len(decoded)
    # H.264 at CRF 20: close to the source, not equal
    err = np.abs(decoded[7].astype(float) - frames[7]).mean()
    assert decoded[7].shape == (192, 256, 3) and err < 6


def test_selected_frames_match_a_full_decode(clip):
    path, _ = clip
    full = dict(iter(FrameReader(path)))
    some, reader = read_frames(path, [0, 5, 19])
    assert sorted(some) == [0, 5, 19]
    for k in some:
        np.testing.assert_array_equal(some[k], full[k])
    assert reader.frames_decoded == 20  # one pass, stopped after the last wanted frame


def test_one_decoding_thread_gives_the_same_frames(clip):
    """6_predict's two workers on 2 cores decode with one thread each (`threads=1`): the
    same pixels as FFmpeg's default threading, with OpenCV and with the PyAV fallback."""
    path, _ = clip
    full = dict(iter(FrameReader(path)))
    import cv2

    for decoder in (None, "pyav"):
        reader = FrameReader(path, threads=1, decoder=decoder)
        assert reader.decoder == (decoder or "opencv")
        if decoder is None:  # OpenCV took the setting (not a silent fall-back to PyAV)
            assert reader._cap.get(cv2.CAP_PROP_N_THREADS) == 1
        one = dict(iter(reader.select({0, 6, 19})))
        assert sorted(one) == [0, 6, 19] and reader.threads == 1
        for k in one:
            np.testing.assert_array_equal(one[k], full[k])


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="0 bytes"):
        probe(tmp_path / "empty.mp4")


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoReadError, match="cannot open"):
        list(FrameReader(tmp_path / "notes.mp4"))


def test_missing_file(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        probe(tmp_path / "nope.mp4")


def test_truncated_video_fails_cleanly_or_yields_fewer_frames(clip, tmp_path):
    path, _ = clip
    for fraction in (0.05, 0.6):
        dst = tmp_path / f"cut{fraction}.mp4"
        truncate(path, dst, fraction)
        try:
            reader = FrameReader(dst)
            frames = list(reader)
        except VideoReadError as e:
            assert str(dst) in str(e)
        else:
            assert 0 < len(frames) <= 20 and reader.num_frames == len(frames)


def test_mpg_and_grayscale_decode_as_rgb(tmp_path):
    mp4 = tmp_path / "g.mp4"
    portrait_clip(mp4, frames=10, fps=25, grayscale=True)  # MPEG-1 needs a standard rate
    to_mpg(mp4, tmp_path / "g.mpg")
    frames = dict(iter(FrameReader(tmp_path / "g.mpg")))
    assert len(frames) == 10 and frames[0].shape == (192, 256, 3)
    spread = np.abs(frames[3].astype(int) - frames[3].mean(axis=2, keepdims=True)).max()
    assert spread <= 12  # gray in, (nearly) gray RGB out


def test_encode_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        encode_video(tmp_path / "x.mp4", np.zeros((2, 9, 10, 3), np.uint8), 10)
    with pytest.raises(ValueError, match="uint8"):
        encode_video(tmp_path / "x.mp4", np.zeros((2, 8, 10, 3), np.float32), 10)


def test_prefetch_keeps_order_propagates_errors_and_stops_early():
    from preprocessing.video import prefetch

    assert list(prefetch(iter(range(100)), size=3)) == list(range(100))

    def broken():
        yield 1
        raise VideoReadError("boom")

    with pytest.raises(VideoReadError, match="boom"):
        list(prefetch(broken()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), size=2)
    assert [next(gen) for _ in range(5)] == list(range(5))
    gen.close()  # the producer thread must stop, not block forever
    n = len(produced)
    import time
    time.sleep(0.3)
    assert len(produced) == n
