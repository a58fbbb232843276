"""Grouping originals by the person they show (dlib face descriptors), for step 4."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, WorkDir, atomic_write_bytes, encode_png
from preprocessing.crops import DEFAULT_MARGIN, crop_box
from preprocessing.folds import build_rows, generate_folds, regroup
from preprocessing.identity import (compute_descriptors, descriptor_path, face_box_in_crop, identity_groups,
                                    pick_crops)
from preprocessing.sample_data import IDENTITIES, CameraPath, Portrait, camera_matrix, render_clip
from conftest import make_opts, write_metadata

FRAMES = (0, 10, 20)
# Originals of one folder: two clips of the astronaut, filmed with different camera paths.
ORIGINALS = {"r_astro_a": "astronaut", "r_grace": "grace_hopper", "r_camera": "cameraman", "r_astro_b": "astronaut"}
# MTCNN's boxes of the portraits (sample_data.load_portrait), fixed here to keep torch out of these tests.
FACE_BOXES = {"astronaut": (181, 62, 268, 172), "grace_hopper": (174, 120, 356, 340),
              "cameraman": (199, 119, 254, 192)}


def make_portrait(identity: str) -> Portrait:
    return Portrait(identity, IDENTITIES[identity](), np.zeros((68, 2), np.float32), np.array(FACE_BOXES[identity]))


def write_portrait_crops(work: WorkDir, vid: str, identity: str, seed: int, label="REAL", boxes_from=None):
    """Crops as step 1 cuts them, from frames of a sample_data clip: the face box is the
    portrait's box carried by the virtual camera; no video or detector involved."""
    portrait = make_portrait(identity)
    size, n = (256, 192), FRAMES[-1] + 1
    path = CameraPath.random(np.random.default_rng(seed))
    frames = render_clip(portrait, path, size, n)
    x1, y1, x2, y2 = portrait.box
    names = []
    for f in FRAMES:
        pan, zoom, angle, *_ = path.at(f / (n - 1))
        corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]]) @ camera_matrix(
            portrait, size, pan, zoom, angle).T
        box = (*corners.min(axis=0), *corners.max(axis=0))
        cx1, cy1, cx2, cy2 = crop_box(box, *size, DEFAULT_MARGIN)
        atomic_write_bytes(work.crop(vid, f, 0), encode_png(frames[f][cy1:cy2, cx1:cx2]))
        names.append(f"{f}_0.png")
    CropManifest(vid, label, boxes_from or vid, boxes_from is not None, names, DEFAULT_MARGIN).save(
        work.crop_manifest(vid))


@pytest.fixture(scope="module")
def portraits(tmp_path_factory):
    """DATA_DIR (placeholder video files) and WORK_DIR with real crops: four originals
    (the astronaut twice), a fake of each (the original's pixels will do: only originals
    are described), and an orphan fake of the astronaut."""
    root = tmp_path_factory.mktemp("identity")
    data, work = root / "data", WorkDir(root / "work")
    entries = {}
    for k, (name, identity) in enumerate(ORIGINALS.items()):
        entries[f"{name}.mp4"] = {"label": "REAL", "original": None}
        entries[f"{name}_fake.mp4"] = {"label": "FAKE", "original": f"{name}.mp4"}
        write_portrait_crops(work, f"p/{name}", identity, seed=k)
        write_portrait_crops(work, f"p/{name}_fake", identity, seed=k, label="FAKE", boxes_from=f"p/{name}")
    entries["orphan.mp4"] = {"label": "FAKE", "original": "gone.mp4"}
    write_portrait_crops(work, "p/orphan", "astronaut", seed=9, label="FAKE")
    write_metadata(data / "p", entries)
    for file in entries:
        (data / "p" / file).write_bytes(b"x")
    found, failed = compute_descriptors(work.root, [f"p/{n}" for n in ORIGINALS], progress=False)
    assert failed == {}
    return data, work, found


def test_face_box_matches_the_crop_margin():
    assert face_box_in_crop((150, 100), 1 / 3) == (20, 30, 80, 120)  # the middle 60%
    assert face_box_in_crop((100, 100), 0.0) == (0, 0, 100, 100)


def test_pick_crops_spreads_over_the_video_per_face():
    names = [f"{f}_0.png" for f in range(0, 200, 10)] + [f"{f}_1.png" for f in range(0, 100, 10)]
    assert pick_crops(names, per_face=5) == ["0_0.png", "50_0.png", "100_0.png", "140_0.png", "190_0.png",
                                             "0_1.png", "20_1.png", "40_1.png", "70_1.png", "90_1.png"]
    # a face in a few frames only (a poster, a TV screen) is not a person of the video
    assert pick_crops(names[:20] + ["30_1.png", "40_1.png"], per_face=2) == ["0_0.png", "190_0.png"]


def test_same_portrait_is_close_and_different_portraits_are_far(portraits):
    _, _, found = portraits
    assert all(d.shape == (len(FRAMES), 129) and d.dtype == np.float32 for d in found.values())

    def distance(a, b):
        return float(np.linalg.norm(found[f"p/{a}"][:, 1:].mean(0) - found[f"p/{b}"][:, 1:].mean(0)))

    assert distance("r_astro_a", "r_astro_b") < 0.6
    for a, b in [("r_astro_a", "r_grace"), ("r_astro_b", "r_grace"), ("r_astro_a", "r_camera"),
                 ("r_grace", "r_camera")]:
        assert distance(a, b) > 0.6, (a, b)


def test_descriptors_are_cached_until_the_crops_change(portraits):
    _, work, found = portraits
    vid = "p/r_grace"
    cache = descriptor_path(work.root, vid)
    assert cache.exists()
    np.testing.assert_array_equal(np.load(cache), found[vid])
    cache.write_bytes(b"")  # a corrupt cache is recomputed; a fresh one is read as is
    os.utime(cache, ns=(work.crop_manifest(vid).stat().st_mtime_ns,) * 2)
    again, _ = compute_descriptors(work.root, [vid], progress=False)
    np.testing.assert_allclose(again[vid], found[vid], atol=1e-5)
    stamp = cache.stat().st_mtime_ns
    compute_descriptors(work.root, [vid], progress=False)
    assert cache.stat().st_mtime_ns == stamp


def test_one_person_in_two_originals_shares_a_fold(portraits):
    data, work, _ = portraits
    opts = make_opts(data, work.root)
    df, _ = build_rows(opts)
    by_person, notes = regroup(df, opts, "identity")
    by_original, _ = regroup(df, opts, "original")
    group = dict(zip(df.video, by_person))
    assert notes == []
    assert group["p/r_astro_a"] == group["p/r_astro_b"] == group["p/r_astro_a_fake"] == group["p/r_astro_b_fake"]
    assert len({group["p/r_astro_a"], group["p/r_grace"], group["p/r_camera"]}) == 3
    assert group["p/orphan"] == "p/gone"  # an orphan fake keeps the group of its absent original
    assert dict(zip(df.video, by_original))["p/r_astro_a"] != dict(zip(df.video, by_original))["p/r_astro_b"]
    assert by_original.nunique() == 5 and by_person.nunique() == 4

    for seed in range(4):
        r = generate_folds(opts, folds=2, seed=seed)
        assert r.noted == 0 and r.counters["groups"] == 4
        fold = pd.read_csv(work.folds).drop_duplicates("video").set_index("video").fold
        astronaut = ["p/r_astro_a", "p/r_astro_b", "p/r_astro_a_fake", "p/r_astro_b_fake"]
        assert fold[astronaut].nunique() == 1, seed
    r = generate_folds(opts, folds=2, seed=0, identity_threshold=0.05)  # too strict: nobody matches
    assert r.counters["groups"] == 5


def test_identity_groups_are_transitive_and_join_the_people_of_one_video():
    def video(*faces):  # rows [face index, descriptor] around the given 1-d points
        return np.array([[i, x] + [0.0] * 127 for i, x in enumerate(faces)], dtype=np.float32)

    groups = identity_groups({"a": video(0.0), "b": video(0.5), "c": video(1.0),   # a-b-c: a chain
                              "d": video(3.0), "e": video(5.0), "f": video(3.1, 5.1),  # f shows d and e
                              "g": video(9.0)}, threshold=0.6)
    assert groups == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "d", "f": "d", "g": "g"}
    assert len(set(identity_groups({"a": video(0.0), "b": video(0.5)}, threshold=0.4).values())) == 2


@pytest.mark.slow
def test_generated_sample_keeps_each_portrait_in_one_fold(sample_dir, sample_work):
    """On the sample of steps 0-4 (REAL clips cycle through the portraits, so several
    originals show one person), each portrait's originals and fakes share a fold."""
    work, _ = sample_work
    index = json.loads((sample_dir / "_index.json").read_text())
    df = pd.read_csv(WorkDir(work).folds, keep_default_na=False).drop_duplicates("video")
    df["identity"] = df.video.map(lambda v: index[v]["identity"])
    paired = df[df.original != ""]
    assert paired.groupby("identity").video.count().max() >= 4  # two originals + their fakes
    assert paired.groupby("identity").fold.nunique().eq(1).all()
