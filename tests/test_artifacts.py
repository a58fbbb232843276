import json

import numpy as np
import pytest

from preprocessing.artifacts import (FaceBoxes, WorkDir, atomic_dir, atomic_write_json, encode_png,
                                     parse_crop_name, read_png, write_errors)


def test_faceboxes_roundtrip(tmp_path):
    boxes = FaceBoxes(width=640, height=480, fps=29.97, num_frames=300,
                      frames={0: [[1.0, 2.0, 30.5, 40.25, 0.99]], 10: [], 20: [[5, 6, 7, 8, 0.9], [1, 2, 3, 4, 0.95]]})
    path = tmp_path / "boxes" / "part" / "vid.json"
    boxes.save(path)
    raw = json.loads(path.read_text())
    assert set(raw) == {"width", "height", "fps", "num_frames", "frames"}
    assert set(raw["frames"]) == {"0", "10", "20"}  # JSON keys are strings
    back = FaceBoxes.load(path)
    assert back == boxes
    assert back.num_faces == 3


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_failure_keeps_old_output_and_no_partial(tmp_path):
    target = tmp_path / "crops" / "vid"
    with atomic_dir(target) as tmp:
        (tmp / "0_0.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "0_0.png").write_bytes(b"new")
            raise RuntimeError("killed")
    assert (target / "0_0.png").read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["vid"]


def test_atomic_dir_removes_stale_temp_of_a_killed_run(tmp_path):
    stale = tmp_path / ".vid.tmp-deadbeef"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"x")
    with atomic_dir(tmp_path / "vid") as tmp:
        (tmp / "a").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vid"]


def test_png_roundtrip_keeps_rgb_order(tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 200  # red
    (tmp_path / "x.png").write_bytes(encode_png(img))
    back = read_png(tmp_path / "x.png")
    np.testing.assert_array_equal(back, img)
    with pytest.raises(FileNotFoundError):
        read_png(tmp_path / "missing.png")


def test_paths_and_names():
    w = WorkDir("/w")
    assert str(w.boxes("part_1/abc")) == "/w/boxes/part_1/abc.json"
    assert str(w.crop("part_1/abc", 120, 1)) == "/w/crops/part_1/abc/120_1.png"
    assert str(w.diff("p/f", 10, 0)) == "/w/diffs/p/f/10_0_diff.png"
    assert str(w.landmarks("p/r", 10, 0)) == "/w/landmarks/p/r/10_0.npy"
    assert w.errors("0_detect_faces").name == "0_detect_faces_errors.jsonl"
    assert w.errors("0_detect_faces", 1, 4).name == "0_detect_faces_errors.part1of4.jsonl"
    assert parse_crop_name("120_3.png") == (120, 3)


def test_errors_file_keeps_skipped_replaces_retried(tmp_path):
    path = tmp_path / "e.jsonl"
    write_errors(path, [{"video": "a", "error": "x"}, {"video": "b", "error": "y"}], set())
    # second run: a was retried and succeeded, b was skipped, c failed
    merged = write_errors(path, [{"video": "c", "error": "z"}], {"a"})
    assert [e["video"] for e in merged] == ["b", "c"]
    assert [json.loads(l)["video"] for l in path.read_text().splitlines()] == ["b", "c"]
