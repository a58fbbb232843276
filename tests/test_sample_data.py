import json

import cv2
import numpy as np
import pytest

from preprocessing.dataset import load_dataset
from preprocessing.sample_data import (SAMPLE_RATE, Artefacts, CameraPath, MouthRig, camera_matrix,
                                       frame_loudness, generate_sample_dataset, load_portrait, loudness_envelope,
                                       main, mos_from_strength, render_clip, shape_predictor_path, swap_face,
                                       synthesize_speech)
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


# --------------------------------------------------------------------------- --audio / --av-fakes
def _decoded_audio(path):
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


def _decoded_frames(path):
    return np.stack([f for _, f in FrameReader(path)]).astype(np.int16)


def test_speech_track_is_syllables_over_silence():
    a = synthesize_speech(3.0, np.random.default_rng(7))
    assert np.array_equal(a, synthesize_speech(3.0, np.random.default_rng(7)))
    assert a.dtype == np.float32 and a.shape == (3 * SAMPLE_RATE,) and np.abs(a).max() <= 1.0
    rms = frame_loudness(a, 300, 100)  # 10 ms windows
    assert rms[:5].max() < 0.01 and rms[-5:].max() < 0.01  # silent ends: a circular shift has no seam
    onsets = np.sum((rms[1:] > 0.05) & (rms[:-1] <= 0.05))
    assert 5 <= onsets <= 20, onsets  # syllable-like bursts, about 3-6 a second
    assert 0.2 < (rms > 0.05).mean() < 0.9  # speech and pauses
    env = loudness_envelope(a, 45, 15)
    assert env.max() == 1.0 and env.min() < 0.05


def test_mouth_opens_only_the_lower_face():
    target = load_portrait("grace_hopper")
    path, size, n = CameraPath.random(np.random.default_rng(0)), (160, 120), 3
    plain = render_clip(target, path, size, n)
    assert np.array_equal(render_clip(target, path, size, n, mouth=np.zeros(n)), plain)  # closed: the portrait
    talking = render_clip(target, path, size, n, mouth=np.array([0.0, 0.5, 1.0]))
    diff = np.abs(talking.astype(int) - plain.astype(int)).max(-1)
    assert diff[0].max() == 0 and 0 < (diff[1] > 30).sum() < (diff[2] > 30).sum()  # wider open, more changed
    rig = MouthRig(target.landmarks, target.image.shape[:2])
    h, w = target.image.shape[:2]
    for t in (1, 2):
        m = camera_matrix(target, size, *path.at(t / (n - 1))[:3])
        ys, xs = np.nonzero(diff[t])
        # back in the portrait (the camera reflects it past its edges): all inside the warped lower face
        u, v = (np.stack([xs, ys, np.ones_like(xs)], 1) @ cv2.invertAffineTransform(m).T).T
        u, v = (np.abs((u + 2 * w - 2) % (2 * w - 2) - (w - 1)) - (w - 1)) * -1, \
            (np.abs((v + 2 * h - 2) % (2 * h - 2) - (h - 1)) - (h - 1)) * -1  # reflect-101 folding
        assert (u > rig.x0 - 2).all() and (u < rig.x1 + 1).all() and (v > rig.y0 - 2).all() and (v < rig.y1 + 1).all()
        lm = target.landmarks
        strong = diff[t][ys, xs] > 30  # the cavity, the moved lip and jaw (and the neck below it): under the nose
        assert (v[strong] > lm[33, 1]).all()
        assert lm[48, 0] < np.median(u[strong]) < lm[54, 0]  # centred on the mouth
        assert lm[33, 1] < np.median(v[strong]) < lm[8, 1]
    # the swapped face talks too: its layer and mask get the same warp
    swap = swap_face(target, load_portrait("astronaut"))
    fake_closed = render_clip(target, path, size, n, swap=swap, rng=np.random.default_rng(1))
    fake_open = render_clip(target, path, size, n, swap=swap, rng=np.random.default_rng(1), mouth=np.array([0, .5, 1]))
    assert np.array_equal(fake_open[0], fake_closed[0])
    assert (np.abs(fake_open[2].astype(int) - fake_closed[2].astype(int)).max(-1) > 30).sum() > 20


AV = dict(folders=2, reals=1, fakes=1, seconds=2.0, size=(160, 120), seed=2)


def test_audio_dataset_lips_follow_the_sound(tmp_path):
    a = generate_sample_dataset(tmp_path / "a", audio=True, av_fakes=1, **AV)
    plain = generate_sample_dataset(tmp_path / "plain", **AV)
    # the CLI writes the same dataset, byte for byte (deterministic)
    assert main([str(tmp_path / "b"), "--folders", "2", "--reals", "1", "--fakes", "1", "--seconds", "2",
                 "--size", "160", "120", "--seed", "2", "--audio", "--av-fakes", "1"]) == 0
    for vid in a:
        assert (tmp_path / "a" / f"{vid}.mp4").read_bytes() == (tmp_path / "b" / f"{vid}.mp4").read_bytes()
    # names, identities and camera paths are those of the run without audio; plus one av-fake per folder
    assert {k: {f: x for f, x in v.items() if f != "audio"} for k, v in a.items() if k in plain} == plain
    av_fakes = {k: v for k, v in a.items() if "av_fake" in v}
    assert len(a) == len(plain) + 2 and set(a) - set(plain) == set(av_fakes)
    assert sorted(v["av_fake"] for v in av_fakes.values()) == ["shift", "swap"]  # alternating kinds
    for folder in ("sample_part_0", "sample_part_1"):
        meta = json.loads((tmp_path / "a" / folder / "metadata.json").read_text())
        assert all(e["audio"] is True for e in meta.values())
        for name, e in meta.items():
            assert {k: v for k, v in a[f"{folder}/{name[:-4]}"].items() if k in e} == e
            if "av_fake" in e:
                assert e["label"] == "FAKE" and meta[e["original"]]["label"] == "REAL"
                assert ("audio_shift_s" in e) == (e["av_fake"] == "shift")

    import av
    frames, sound = {}, {}
    for vid in a:
        path = tmp_path / "a" / f"{vid}.mp4"
        with av.open(str(path)) as c:
            (v,), (s,) = c.streams.video, c.streams.audio
            assert s.codec_context.name == "aac" and s.rate == SAMPLE_RATE and s.channels == 1
            assert abs(float(s.duration * s.time_base) - float(v.duration * v.time_base)) < 0.1
        frames[vid] = _decoded_frames(path)
        assert frames[vid].shape == (30, 120, 160, 3)  # OpenCV decodes the video stream as before
        sound[vid] = _decoded_audio(path)[:2 * SAMPLE_RATE]

    n = 2 * SAMPLE_RATE
    for vid, e in av_fakes.items():
        folder = vid.split("/")[0]
        real = f"{folder}/{e['original'][:-4]}"
        assert np.array_equal(frames[vid], frames[real])  # the REAL's frames, re-encoded identically
        # mouth motion: where the talking REAL differs from its silent twin (codec noise stays under 30)
        motion = (np.abs(frames[real] - _decoded_frames(tmp_path / "plain" / f"{real}.mp4")).max(-1) > 30).mean((1, 2))
        r_real = np.corrcoef(motion, frame_loudness(sound[real], 30, 15))[0, 1]
        r_fake = np.corrcoef(motion, frame_loudness(sound[vid], 30, 15))[0, 1]
        assert r_real > 0.8 and r_fake < 0.5 and r_real - r_fake > 0.4, (e["av_fake"], r_real, r_fake)
        if e["av_fake"] == "shift":
            shift = e["audio_shift_s"]
            assert 0.5 <= abs(shift) <= 1.5 and e["audio_from"] == real
            xc = np.fft.irfft(np.fft.rfft(sound[vid]) * np.conj(np.fft.rfft(sound[real])), n)
            lag = (int(np.argmax(xc)) - int(round(shift * SAMPLE_RATE))) % n
            assert min(lag, n - lag) <= 2, lag
        else:
            source = e["audio_from"]
            assert source != real and a[source]["label"] == "REAL"
            assert np.allclose(sound[vid], sound[source], atol=1e-4)
            assert abs(np.corrcoef(sound[vid], sound[real])[0, 1]) < 0.3
    # a face-swap FAKE carries its REAL's sound
    for vid, e in a.items():
        if e["label"] == "FAKE" and "av_fake" not in e:
            assert np.allclose(sound[vid], sound[f"{vid.split('/')[0]}/{e['original'][:-4]}"], atol=1e-4)


def test_av_fakes_need_audio(tmp_path):
    with pytest.raises(ValueError, match="audio"):
        generate_sample_dataset(tmp_path, av_fakes=1, **{**AV, "folders": 1})
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--av-fakes", "1"])
    with pytest.raises(ValueError, match="reals must be >= 2"):  # too short to shift, no other REAL to swap
        generate_sample_dataset(tmp_path, audio=True, av_fakes=1, **{**AV, "seconds": 0.6})
    assert not list(tmp_path.iterdir())  # refused before writing anything
