import json

import numpy as np
import pytest

from preprocessing.dataset import load_dataset
from preprocessing.sample_data import (Artefacts, CameraPath, camera_matrix, generate_sample_dataset,
                                       load_portrait, main, mos_from_strength, render_clip, shape_predictor_path,
                                       swap_face)
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


# --------------------------------------------------------------------------- --mos
TINY = dict(folders=1, reals=2, fakes=1, seconds=0.4, size=(128, 96), orphan_fakes=1)


def test_mos_dataset(tmp_path):
    a = generate_sample_dataset(tmp_path / "a", seed=5, mos=True, **TINY)
    plain = generate_sample_dataset(tmp_path / "plain", seed=5, **TINY)
    c = generate_sample_dataset(tmp_path / "c", seed=6, mos=True, **TINY)
    # the CLI writes the same dataset
    assert main([str(tmp_path / "b"), "--folders", "1", "--reals", "2", "--fakes", "1", "--orphan-fakes", "1",
                 "--seconds", "0.4", "--size", "128", "96", "--seed", "5", "--mos"]) == 0
    fakes = {k: v for k, v in a.items() if v["label"] == "FAKE"}
    assert len(fakes) == 3 and len(a) == 5
    for vid, entry in a.items():
        if entry["label"] == "FAKE":
            assert isinstance(entry["mos"], float) and 1.0 <= entry["mos"] <= 5.0
            assert 0.0 <= entry["artefact_strength"] <= 1.0
            assert entry["mos"] == mos_from_strength(entry["artefact_strength"])
        else:
            assert "mos" not in entry and "artefact_strength" not in entry
    # stratified: one strength in each third of [0, 1]
    strengths = sorted(v["artefact_strength"] for v in fakes.values())
    assert [int(s * 3) for s in strengths] == [0, 1, 2]
    # metadata.json on disk carries them, identically from the API and the CLI
    meta = json.loads((tmp_path / "a" / "sample_part_0" / "metadata.json").read_text())
    assert meta == json.loads((tmp_path / "b" / "sample_part_0" / "metadata.json").read_text())
    for vid, entry in a.items():
        name = vid.split("/")[1] + ".mp4"
        assert meta[name].get("mos") == entry.get("mos")
        assert (tmp_path / "a" / f"{vid}.mp4").read_bytes() == (tmp_path / "b" / f"{vid}.mp4").read_bytes()
    assert c != a
    # the mos draws are apart from the dataset's: same names, REAL clips byte-identical
    assert set(plain) == set(a)
    for vid, entry in plain.items():
        if entry["label"] == "REAL":
            assert (tmp_path / "a" / f"{vid}.mp4").read_bytes() == (tmp_path / "plain" / f"{vid}.mp4").read_bytes()
        assert {k: v for k, v in a[vid].items() if k not in ("mos", "artefact_strength")} == entry
    assert "mos" not in json.dumps(plain)


def _face_region(target, path, size, t, num_frames):
    pan, zoom, angle, _, _ = path.at(t / max(num_frames - 1, 1))
    m = camera_matrix(target, size, pan, zoom, angle)
    x1, y1, x2, y2 = target.box
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]]) @ m.T
    (u0, v0), (u1, v1) = corners.min(0).astype(int), np.ceil(corners.max(0)).astype(int)
    return slice(max(v0, 0), v1), slice(max(u0, 0), u1)


def test_mos_falls_as_artefacts_grow():
    assert Artefacts.from_strength(0.0) == Artefacts()  # s=0 is the default fake
    s = np.linspace(0, 1, 101)
    raw, rounded = mos_from_strength(s, step=None), mos_from_strength(s)
    assert (np.diff(raw) < 0).all() and (np.diff(rounded) <= 0).all()
    assert rounded[0] == 4.6 and rounded[-1] == 1.0 and np.allclose(rounded * 10, np.round(rounded * 10))

    target, donor = load_portrait("grace_hopper"), load_portrait("astronaut")
    path, size, n = CameraPath.random(np.random.default_rng(0)), (128, 96), 4
    real = render_clip(target, path, size, n).astype(int)
    default = render_clip(target, path, size, n, swap=swap_face(target, donor), rng=np.random.default_rng(1))
    diffs, moses = [], []
    for strength in (0.0, 0.35, 0.7, 1.0):
        art = Artefacts.from_strength(strength)
        fake = render_clip(target, path, size, n, swap=swap_face(target, donor, art), rng=np.random.default_rng(1),
                           artefacts=art)
        if strength == 0.0:
            assert np.array_equal(fake, default)
        diffs.append(np.mean([np.abs(fake[t].astype(int) - real[t])[_face_region(target, path, size, t, n)].mean()
                              for t in range(n)]))
        moses.append(mos_from_strength(strength))
    assert np.all(np.diff(diffs) > 0), diffs
    assert np.all(np.diff(moses) < 0), moses


def test_most_broken_fake_still_has_a_face(detector):
    path, size, n = CameraPath.random(np.random.default_rng(0)), (256, 192), 3
    art = Artefacts.from_strength(1.0)
    for target_name, donor_name in (("cameraman", "astronaut"), ("grace_hopper", "astronaut")):
        target = load_portrait(target_name)
        fake = render_clip(target, path, size, n, swap=swap_face(target, load_portrait(donor_name), art),
                           rng=np.random.default_rng(1), artefacts=art)
        for t, det in enumerate(detector.detect(list(fake))):
            assert len(det.boxes) >= 1, (target_name, t)
            rows, cols = _face_region(target, path, size, t, n)
            cx, cy = det.boxes[int(np.argmax(det.probs))].reshape(2, 2).mean(0)
            assert cols.start <= cx <= cols.stop and rows.start <= cy <= rows.stop
