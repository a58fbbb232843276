"""Every video a user has decodes (#12): AV1, HEVC 10-bit, VP9/WebM and rotated phone
clips, made at test time from a face image with the shipped ffmpeg.

OpenCV's wheel has no AV1 decoder: such a file falls back to PyAV (FFmpeg with dav1d).
Rotation metadata is applied identically by both decoders, so step 0's boxes land on the
face in step 1's crops whatever decoded the file.
"""
import shutil
import subprocess

import numpy as np
import pytest

from conftest import read_errors, write_metadata
from helpers import portrait_clip
from preprocessing.video import FrameReader, VideoReadError, ffmpeg_exe

FRAMES = 16
# name -> (file name, ffmpeg output arguments, the decoder that reads it)
FORMATS = {
    "av1": ("av1.mp4", ["-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "30", "-b:v", "0", "-pix_fmt", "yuv420p"],
            "pyav"),
    "hevc10": ("hevc10.mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"],
               "opencv"),
    "vp9": ("vp9.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "30", "-b:v", "0"],
            "opencv"),
}


def transcode(src, dst, out_args, in_args=()):
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *in_args, "-i", str(src), *out_args, str(dst)],
                   check=True)
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """{name: path}: the H.264 source, its AV1 / HEVC 10-bit / VP9 re-encodes, and the source
    with 90 and 270 degree display rotations (stream copy: the same pixels, turned)."""
    d = tmp_path_factory.mktemp("formats")
    out = {"h264": d / "source.mp4"}
    portrait_clip(out["h264"], size=(256, 192), frames=FRAMES, fps=15)
    for name, (fname, args, _) in FORMATS.items():
        out[name] = transcode(out["h264"], d / fname, args)
    for deg in (90, 270):
        out[f"rot{deg}"] = transcode(out["h264"], d / f"rot{deg}.mp4", ["-c", "copy"],
                                     ["-display_rotation", str(deg)])
    # a phone clip: pixels stored sideways (turned clockwise), shown upright by its metadata
    sideways = transcode(out["h264"], d / "sideways.mp4", ["-vf", "transpose=1", "-c:v", "libx264", "-crf", "12"])
    out["phone"] = transcode(sideways, d / "phone.mp4", ["-c", "copy"], ["-display_rotation", "90"])
    return out


def frames_of(path, **kw):
    reader = FrameReader(path, **kw)
    frames = [f for _, f in reader]
    return np.stack(frames), reader


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_codec_decodes_every_frame_close_to_the_source(clips, name):
    source, _ = frames_of(clips["h264"])
    frames, reader = frames_of(clips[name])
    assert reader.decoder == FORMATS[name][2]
    assert frames.shape == source.shape and frames.dtype == np.uint8 and reader.num_frames == FRAMES
    assert reader.info.width == 256 and reader.info.height == 192 and reader.info.fps == pytest.approx(15, abs=0.1)
    assert np.abs(frames.astype(int) - source).mean() < 6  # a re-encode of the same pictures
    if reader.decoder == "pyav":
        assert "no frame" in reader.fallback_reason


def test_pyav_decodes_like_opencv(clips):
    """The fallback gives OpenCV's pixels (same YUV->RGB) on a file both can read."""
    cv, _ = frames_of(clips["h264"])
    av, reader = frames_of(clips["h264"], decoder="pyav")
    assert reader.decoder == "pyav" and np.array_equal(av, cv)
    wanted = {3, 7, 15}
    picked = dict(FrameReader(clips["h264"], decoder="pyav").select(wanted))
    assert sorted(picked) == sorted(wanted) and all(np.array_equal(picked[i], cv[i]) for i in wanted)


@pytest.mark.parametrize("deg", [90, 270])
def test_rotation_is_applied_identically_by_both_decoders(clips, deg):
    source, _ = frames_of(clips["h264"])
    upright = np.stack([np.rot90(f, deg // 90) for f in source])  # display rotation is counter-clockwise
    for decoder in ("opencv", "pyav"):
        frames, reader = frames_of(clips[f"rot{deg}"], decoder=decoder)
        assert reader.decoder == decoder
        assert (reader.info.width, reader.info.height) == (192, 256)
        assert np.array_equal(frames, upright), decoder


def test_a_file_neither_decoder_reads_is_a_clear_error(tmp_path):
    bad = tmp_path / "noise.webm"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="OpenCV and PyAV"):
        list(FrameReader(bad))
    with pytest.raises(ValueError, match="decoder"):
        FrameReader(bad, decoder="gstreamer")


def test_a_phone_clip_decodes_upright(clips):
    source, _ = frames_of(clips["h264"])
    for decoder in ("opencv", "pyav"):
        frames, reader = frames_of(clips["phone"], decoder=decoder)
        assert frames.shape == source.shape, decoder
        assert np.abs(frames.astype(int) - source).mean() < 4, decoder


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
def test_steps_0_to_4_and_prediction_on_every_format(clips, tmp_path):
    """Boxes found on every sampled frame, at the source's place (the phone clip too),
    crops with a face in them (step 2 finds its landmarks), an AV1 fake pixel-aligned with
    its H.264 original (step 3), folds (step 4), the fallback decoder named in the errors
    files, and 6_predict's scores from faces, not the 0.5 fallback. Step 5 trains from
    the crops, whatever decoded them."""
    from conftest import make_opts
    import pandas as pd

    from preprocessing.artifacts import FaceBoxes, WorkDir, read_png
    from preprocessing.crops import extract_crops
    from preprocessing.diffs import generate_diffs
    from preprocessing.faces import detect_faces
    from preprocessing.folds import generate_folds
    from preprocessing.landmarks import generate_landmarks

    data, work = tmp_path / "data", tmp_path / "work"
    names = {k: (k + clips[k].suffix) for k in ("h264", "av1", "hevc10", "vp9", "phone")}
    meta = {n: {"label": "REAL"} for n in names.values()}
    meta[names["av1"]] = {"label": "FAKE", "original": names["h264"]}  # a fake decoded by the fallback
    write_metadata(data / "fmt", meta)
    for k, n in names.items():
        shutil.copy(clips[k], data / "fmt" / n)
    opts = make_opts(data, work)
    steps = {"0": detect_faces(opts), "1": extract_crops(opts), "2": generate_landmarks(opts),
             "3": generate_diffs(opts), "4": generate_folds(opts, folds=1)}  # one person: one group
    for step, r in steps.items():
        assert r.failed == 0, (step, read_errors(r.errors_file))
    assert steps["1"].done == 5 and steps["3"].counters["diffs"] > 0
    assert steps["2"].counters["crops_without_landmarks"] == 0  # a face in every crop
    assert read_errors(steps["1"].errors_file)[0]["note"].startswith("decoded with pyav")
    assert steps["1"].counters["decoded_with_pyav"] == 1  # the AV1 fake
    assert not steps["0"].counters.get("decoded_with_pyav")  # step 0 detects on the fake's original
    w = WorkDir(work)
    # the AV1 fake is cut with its H.264 original's boxes: pixel-aligned, so its SSIM diff
    # against the original is small (a re-encode, not a shifted or rotated picture)
    diffs = sorted(w.diffs_dir("fmt/av1").glob("*.png"))
    assert diffs and max(read_png(d).mean() for d in diffs) < 40
    assert set(pd.read_csv(w.folds).video) == {f"fmt/{k}" for k in names}
    # the AV1 file as a REAL of its own: step 0 decodes it with the fallback and finds the face
    solo = tmp_path / "solo"
    write_metadata(solo / "fmt", {"av1.mp4": {"label": "REAL"}})
    shutil.copy(clips["av1"], solo / "fmt" / "av1.mp4")
    r0 = detect_faces(make_opts(solo, tmp_path / "solo_work"))
    assert r0.done == 1 and r0.counters["decoded_with_pyav"] == 1 and r0.counters["faces"] >= 2
    assert "decoded with pyav" in read_errors(r0.errors_file)[0]["note"]
    ref = FaceBoxes.load(w.boxes("fmt/h264"))
    for k in [k for k in names if k != "av1"] + ["solo"]:
        where = WorkDir(tmp_path / "solo_work").boxes("fmt/av1") if k == "solo" else w.boxes(f"fmt/{k}")
        boxes = FaceBoxes.load(where)
        assert (boxes.width, boxes.height) == (256, 192) and boxes.frames.keys() == ref.frames.keys()
        for f, faces in ref.frames.items():
            assert len(boxes.frames[f]) == len(faces) == 1, (k, f)
            # the same face in the same place: 0.893 at worst measured (the phone clip's sideways pixels
            # are re-encoded, and MTCNN's boxes move a few pixels with the CPU's kernels); a wrong
            # rotation or frame gives far less
            assert _iou(boxes.frames[f][0], faces[0]) > 0.85, (k, f)

    from test_train import tiny
    from inference.predictor import predict_dir
    from training.engine import build_model, save_checkpoint

    cfg = tiny()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, build_model(cfg, pretrained=False), cfg, 0, {})
    result = predict_dir(data, [ckpt], num_frames=4, progress=False)
    assert result.errors == [] and len(result.rows) == 5
    assert [n["video"] for n in result.notes] == ["fmt/" + names["av1"]]
    assert "decoded with pyav" in result.notes[0]["note"]


PEAK_RSS = """
import resource, sys
sys.path.insert(0, {repo!r})
from preprocessing.video import FrameReader
from preprocessing.artifacts import FaceBoxes
from preprocessing.crops import extract_video_crops
import numpy as np
FrameReader({path!r}, decoder={decoder!r}).select({{0}})  # imports and the decoder's libraries loaded
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
for i, frame in FrameReader({path!r}, decoder={decoder!r}):
    n += 1
boxes = FaceBoxes(width=1280, height=720, fps=30.0, num_frames=n,
                  frames={{f: [[500.0, 200.0, 700.0, 450.0, 0.99]] for f in range(0, n, 10)}})
anchors, clips, _ = extract_video_crops({path!r}, boxes, __import__("pathlib").Path({out!r}), clip_len=4)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, len(anchors), len(clips), (peak - base) / 1024)
"""


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A minute of 720p at 30 fps (ffmpeg's testsrc2)."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30", "-t", "60", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_memory_stays_bounded_on_a_long_video(long_clip, tmp_path, decoder):
    """A minute of 720p (1800 frames, 5 GB as RGB): decoding every frame and step 1's
    crops of 180 anchors x 4-frame clips (720 frames wanted, 2 GB if held) stay within
    a few frames' worth of memory: frames stream."""
    import sys

    from conftest import REPO

    path = long_clip
    (tmp_path / "crops").mkdir()
    code = PEAK_RSS.format(repo=str(REPO), path=str(path), decoder=decoder, out=str(tmp_path / "crops"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    frames, anchors, clip_crops, growth_mb = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    assert frames == 1800 and anchors == 180 and clip_crops == 540
    assert growth_mb < 300, f"peak RSS grew by {growth_mb:.0f} MB while decoding {frames} frames"


def test_a_truncated_av1_file_yields_its_first_frames(clips, tmp_path):
    """Matroska streams (no index at the end): a cut file still holds its first frames,
    which the fallback decodes; the decoding error at the cut ends the stream cleanly."""
    from helpers import truncate

    mkv = transcode(clips["h264"], tmp_path / "av1.mkv", FORMATS["av1"][1])
    cut = tmp_path / "av1_cut.mkv"
    truncate(mkv, cut, 0.6)
    reader = FrameReader(cut)
    frames = [f for _, f in reader]
    assert reader.decoder == "pyav" and 0 < len(frames) < FRAMES and reader.num_frames == len(frames)
