import json

import numpy as np
import pytest

from preprocessing.dataset import load_dataset
from preprocessing.sample_data import (CameraPath, generate_sample_dataset, load_portrait, render_clip,
                                       shape_predictor_path, swap_face)
from preprocessing.video import FrameReader


def test_dataset_shape(sample_dir):
    ds = load_dataset(sample_dir)
    assert ds.errors == []
    labels = [v.label for v in ds.videos]
    assert labels.count("REAL") == 4 and labels.count("FAKE") == 6
    orphans = [v for v in ds.videos if v.is_fake and not v.original_present]
    assert len(orphans) == 2
    for v in ds.videos:
        assert v.path.suffix == ".mp4" and v.path.stat().st_size > 1000
    meta = json.loads((sample_dir / "sample_part_0" / "metadata.json").read_text())
    assert all(set(e) >= {"label", "original"} for e in meta.values())


def test_deterministic_byte_for_byte(tmp_path):
    a = generate_sample_dataset(tmp_path / "a", folders=1, reals=1, fakes=1, seconds=0.4, size=(128, 96), seed=5)
    b = generate_sample_dataset(tmp_path / "b", folders=1, reals=1, fakes=1, seconds=0.4, size=(128, 96), seed=5)
    c = generate_sample_dataset(tmp_path / "c", folders=1, reals=1, fakes=1, seconds=0.4, size=(128, 96), seed=6)
    assert a == b and a != c
    for vid in a:
        assert (tmp_path / "a" / f"{vid}.mp4").read_bytes() == (tmp_path / "b" / f"{vid}.mp4").read_bytes()


def test_fake_differs_only_on_the_face():
    target, donor = load_portrait("grace_hopper"), load_portrait("astronaut")
    path = CameraPath.random(np.random.default_rng(0))
    real = render_clip(target, path, (256, 192), 6)
    fake = render_clip(target, path, (256, 192), 6, swap=swap_face(target, donor), rng=np.random.default_rng(1))
    diff = np.abs(real.astype(int) - fake.astype(int)).max(axis=-1)
    changed = diff > 10
    assert changed.mean() > 0.03  # a face-sized region changed in every frame
    for t in range(6):
        ys, xs = np.nonzero(changed[t])
        assert 40 < xs.mean() < 216 and 20 < ys.mean() < 172
    # far from the face (the frame's border band) nothing changed at all
    assert diff[:, :, :20].max() == 0 and diff[:, :, -20:].max() == 0


def test_real_clip_moves_and_changes_light():
    clip = render_clip(load_portrait("astronaut"), CameraPath.random(np.random.default_rng(2)), (128, 96), 10)
    assert clip.shape == (10, 96, 128, 3)
    assert np.abs(clip[0].astype(int) - clip[-1].astype(int)).mean() > 5
    step = np.abs(clip[4].astype(int) - clip[5].astype(int)).mean()
    assert step < np.abs(clip[0].astype(int) - clip[-1].astype(int)).mean()  # smooth, not jumping


def test_landmark_model_is_found_without_pkg_resources():
    assert shape_predictor_path().name == "shape_predictor_68_face_landmarks.dat"


def test_portrait_landmarks_are_inside_the_face_box():
    for name in ("astronaut", "grace_hopper", "cameraman"):
        p = load_portrait(name)
        x1, y1, x2, y2 = p.box
        inner = p.landmarks[27:]  # nose, eyes, mouth
        assert (inner[:, 0] > x1 - 5).all() and (inner[:, 0] < x2 + 5).all()
        assert (inner[:, 1] > y1 - 5).all() and (inner[:, 1] < y2 + 5).all()
