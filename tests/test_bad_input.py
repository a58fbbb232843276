"""Broken and unusual inputs: each gets a clear message, and the step goes on."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, FaceBoxes, WorkDir
from preprocessing.sample_data import CameraPath, load_portrait, render_clip, swap_face
from preprocessing.video import encode_video
from conftest import REPO, read_errors, run_steps_0_to_4, write_metadata
from helpers import no_face_clip, portrait_clip, to_mpg, truncate

pytestmark = pytest.mark.slow

P = "mixed"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    d = root / P
    d.mkdir()
    target = load_portrait("grace_hopper")
    path = CameraPath.random(np.random.default_rng(1))
    encode_video(d / "good.mp4", render_clip(target, path, (256, 192), 21), 15)
    encode_video(d / "good_fake.mp4", render_clip(target, path, (256, 192), 21,
                                                  swap=swap_face(target, load_portrait("astronaut"))), 15)
    truncate(d / "good.mp4", d / "truncated.mp4", 0.5)
    broken = bytearray((d / "good.mp4").read_bytes())
    broken[:2048] = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    (d / "corrupt.mp4").write_bytes(bytes(broken))
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video, just a text file with a video extension\n" * 20)
    no_face_clip(d / "cup.mp4", frames=21)
    portrait_clip(d / "orphan.mp4", identity="astronaut", frames=21, seed=4)
    portrait_clip(d / "tall.mp4", identity="astronaut", size=(192, 256), frames=21, seed=5)
    portrait_clip(d / "gray.mp4", identity="grace_hopper", frames=21, seed=6, grayscale=True)
    portrait_clip(root / "tmp25.mp4", identity="astronaut", frames=21, fps=25, seed=7)
    to_mpg(root / "tmp25.mp4", d / "grid.mpg")
    shutil.copy(d / "good_fake.mp4", d / "fake_of_empty.mp4")
    real = {"label": "REAL", "original": None}
    write_metadata(d, {
        "good.mp4": real, "good_fake.mp4": {"label": "FAKE", "original": "good.mp4"},
        "truncated.mp4": real, "corrupt.mp4": real, "empty.mp4": real, "notes.mp4": real, "cup.mp4": real,
        "orphan.mp4": {"label": "FAKE", "original": "missing.mp4"},
        "tall.mp4": real, "gray.mp4": real, "grid.mpg": real,
        "fake_of_empty.mp4": {"label": "FAKE", "original": "empty.mp4"},
    })
    (root / "nometa").mkdir()
    shutil.copy(d / "good.mp4", root / "nometa" / "x.mp4")
    (root / "badmeta").mkdir()
    shutil.copy(d / "good.mp4", root / "badmeta" / "y.mp4")
    (root / "badmeta" / "metadata.json").write_text("{oops")
    (root / "tmp25.mp4").unlink()
    return root


@pytest.fixture(scope="module")
def bad_work(bad_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("badwork")
    return work, run_steps_0_to_4(bad_data, work, folds=2)


def _errors(work, step):
    return {e["video"]: e for e in read_errors(WorkDir(work).errors(step))}


def test_unreadable_files_fail_with_a_reason_and_the_rest_goes_on(bad_work):
    work, results = bad_work
    errors = _errors(work, "0_detect_faces")
    assert "0 bytes" in errors[f"{P}/empty"]["error"]
    assert "cannot open" in errors[f"{P}/notes"]["error"]
    assert "VideoReadError" in errors[f"{P}/corrupt"]["error"]
    for vid in ("good", "tall", "gray", "grid", "cup", "orphan"):
        assert WorkDir(work).boxes(f"{P}/{vid}").exists(), vid
    assert results["0"].done >= 7


def test_truncated_video_keeps_what_decodes(bad_work):
    work, _ = bad_work
    path = WorkDir(work).boxes(f"{P}/truncated")
    if path.exists():  # decoded up to the cut
        boxes = FaceBoxes.load(path)
        assert 0 < boxes.num_frames < 21
    else:
        assert "VideoReadError" in _errors(work, "0_detect_faces")[f"{P}/truncated"]["error"]


def test_missing_and_invalid_metadata_name_the_file(bad_data, bad_work):
    work, _ = bad_work
    errors = _errors(work, "0_detect_faces")
    assert str(bad_data / "nometa" / "metadata.json") in errors["nometa/x"]["error"]
    assert "invalid JSON" in errors["badmeta/y"]["error"]
    assert str(bad_data / "badmeta" / "metadata.json") in errors["badmeta/y"]["error"]


def test_no_face_video_is_noted_and_not_cropped(bad_work):
    work, _ = bad_work
    boxes = FaceBoxes.load(WorkDir(work).boxes(f"{P}/cup"))
    assert boxes.num_faces == 0 and len(boxes.frames) == 3
    assert "no face" in _errors(work, "0_detect_faces")[f"{P}/cup"]["note"]
    assert "no face" in _errors(work, "1_extract_crops")[f"{P}/cup"]["note"]
    assert not WorkDir(work).crops_dir(f"{P}/cup").exists()


def test_orphan_fakes_use_their_own_boxes_and_are_unpaired(bad_work):
    work, _ = bad_work
    w = WorkDir(work)
    m = CropManifest.load(w.crop_manifest(f"{P}/orphan"))
    assert m.boxes_from == f"{P}/orphan" and not m.paired and "missing.mp4" not in m.reason
    assert f"{P}/missing is missing" in m.reason
    # the fake whose original exists but is unreadable was detected in a second pass
    m2 = CropManifest.load(w.crop_manifest(f"{P}/fake_of_empty"))
    assert m2.boxes_from == f"{P}/fake_of_empty" and "failed in step 0" in m2.reason
    assert not w.diffs_dir(f"{P}/orphan").exists() and w.diffs_dir(f"{P}/good_fake").exists()


def test_portrait_grayscale_and_mpg_are_handled(bad_work):
    work, _ = bad_work
    w = WorkDir(work)
    tall = FaceBoxes.load(w.boxes(f"{P}/tall"))
    assert (tall.width, tall.height) == (192, 256) and tall.num_faces == 3
    for vid in ("gray", "grid"):
        assert FaceBoxes.load(w.boxes(f"{P}/{vid}")).num_faces >= 3, vid
        assert len(CropManifest.load(w.crop_manifest(f"{P}/{vid}")).crops) >= 3


def test_folds_only_hold_videos_with_crops(bad_work):
    work, _ = bad_work
    df = pd.read_csv(WorkDir(work).folds, keep_default_na=False)
    assert f"{P}/empty" not in set(df.video) and f"{P}/cup" not in set(df.video)
    assert {f"{P}/good", f"{P}/good_fake", f"{P}/grid"} <= set(df.video)


def _cli(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)


def test_cli_exit_codes_and_messages(bad_data, tmp_path):
    ok = _cli("0_detect_faces.py", "--data-dir", str(bad_data), "--work-dir", str(tmp_path / "w"),
              "--no-progress", "--limit", "2")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("[0_detect_faces] 2 videos:")
    only_bad = tmp_path / "only_bad"
    shutil.copytree(bad_data / "badmeta", only_bad / "badmeta")
    bad = _cli("0_detect_faces.py", "--data-dir", str(only_bad), "--work-dir", str(tmp_path / "w2"))
    assert bad.returncode == 1 and "invalid JSON" in bad.stderr and "metadata.json" in bad.stderr
    wrong = _cli("1_extract_crops.py", "--data-dir", str(tmp_path / "nope"), "--work-dir", str(tmp_path / "w3"))
    assert wrong.returncode == 1 and "does not exist" in wrong.stderr
    not_run = _cli("1_extract_crops.py", "--data-dir", str(bad_data), "--work-dir", str(tmp_path / "w4"))
    assert not_run.returncode == 1 and "run 0_detect_faces.py first" in not_run.stderr
    all_bad = tmp_path / "all_bad" / "p"
    write_metadata(all_bad, {"e.mp4": {"label": "REAL", "original": None}})
    (all_bad / "e.mp4").write_bytes(b"")
    fail = _cli("0_detect_faces.py", "--data-dir", str(all_bad.parent), "--work-dir", str(tmp_path / "w5"))
    assert fail.returncode == 1 and "every video failed" in fail.stderr
    errs = [json.loads(l) for l in (tmp_path / "w5" / "0_detect_faces_errors.jsonl").read_text().splitlines()]
    assert errs[0]["video"] == "p/e" and "0 bytes" in errs[0]["error"]
