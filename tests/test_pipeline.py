"""Steps 0-4 end to end on the generated sample dataset."""
import json

import numpy as np
import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, FaceBoxes, WorkDir, read_png
from preprocessing.crops import crop_box
from preprocessing.dataset import load_dataset
from conftest import make_opts, read_errors, run_steps_0_to_4

pytestmark = pytest.mark.slow


def test_every_original_has_boxes_on_the_sampled_frames(sample_dir, sample_work):
    work, results = sample_work
    w = WorkDir(work)
    ds = load_dataset(sample_dir)
    for v in ds.videos:
        if v.detects_own_faces:
            boxes = FaceBoxes.load(w.boxes(v.id))
            assert sorted(boxes.frames) == list(range(0, boxes.num_frames, 10))  # every frame step 1 uses
            assert all(len(b) == 1 for b in boxes.frames.values()), v.id  # one face per frame
            assert (boxes.width, boxes.height) == (256, 192) and boxes.num_frames == 21
        else:
            assert not w.boxes(v.id).exists()  # paired fakes need no detection
    r0 = results["0"]
    assert r0.failed == 0 and r0.counters["frames_detected"] == 6 * 3
    assert r0.counters["frames_decoded"] == 6 * 21


def test_fake_crops_are_pixel_aligned_with_the_original(sample_dir, sample_work):
    work, _ = sample_work
    w = WorkDir(work)
    pairs = 0
    for v in load_dataset(sample_dir).videos:
        m = CropManifest.load(w.crop_manifest(v.id))
        if not (v.is_fake and v.original_present):
            assert m.boxes_from == v.id and not m.paired
            continue
        assert m.paired and m.boxes_from == v.original
        boxes = FaceBoxes.load(w.boxes(v.original))
        original = CropManifest.load(w.crop_manifest(v.original))
        assert m.crops == original.crops
        for name in m.crops:
            fake, real = read_png(w.crops_dir(v.id) / name), read_png(w.crops_dir(v.original) / name)
            frame, face = map(int, name[:-4].split("_"))
            x1, y1, x2, y2 = crop_box(boxes.frames[frame][face], boxes.width, boxes.height, m.margin)
            assert fake.shape == real.shape == (y2 - y1, x2 - x1, 3)
            # same rectangle: the top band (hair/background, outside the swap) matches
            band = slice(0, max(2, fake.shape[0] // 10))
            assert np.abs(fake[band].astype(int) - real[band].astype(int)).mean() < 12
            pairs += 1
    assert pairs == 4 * 3  # 4 paired fakes x 3 sampled frames


def test_diffs_are_dark_outside_the_face_and_bright_inside(sample_dir, sample_work):
    work, results = sample_work
    w = WorkDir(work)
    checked = 0
    for v in load_dataset(sample_dir).videos:
        if not (v.is_fake and v.original_present):
            assert not w.diffs_dir(v.id).exists()
            continue
        for name in CropManifest.load(w.crop_manifest(v.id)).crops:
            frame, face = map(int, name[:-4].split("_"))
            d = read_png(w.diff(v.id, frame, face), gray=True).astype(float)
            h, wd = d.shape
            bh, bw = max(1, h // 10), max(1, wd // 10)
            border = np.concatenate([d[:bh].ravel(), d[-bh:].ravel(), d[:, :bw].ravel(), d[:, -bw:].ravel()])
            centre = d[int(h * .4):int(h * .6), int(wd * .35):int(wd * .65)]
            assert border.mean() < 25 and centre.mean() > 100 and centre.mean() > 5 * border.mean()
            checked += 1
    assert checked == 12 and results["3"].counters["diffs"] == 12


def test_landmarks_for_originals_and_orphans(sample_dir, sample_work):
    work, _ = sample_work
    w = WorkDir(work)
    for v in load_dataset(sample_dir).videos:
        if v.detects_own_faces:
            files = sorted(w.landmarks_dir(v.id).glob("*.npy"))
            assert len(files) == 3
            pts = np.load(files[0])
            crop = read_png(w.crops_dir(v.id) / (files[0].stem + ".png"))
            assert pts.shape == (5, 2) and pts.dtype == np.float32
            assert (pts >= 0).all() and (pts[:, 0] < crop.shape[1]).all() and (pts[:, 1] < crop.shape[0]).all()
        else:
            assert not w.landmarks_dir(v.id).exists()


def test_folds_keep_groups_together(sample_dir, sample_work):
    work, _ = sample_work
    df = pd.read_csv(WorkDir(work).folds, keep_default_na=False)
    assert list(df.columns) == ["video", "file", "label", "original", "frame", "face", "fold"]
    assert len(df) == 10 * 3 and set(df.fold) == {0, 1}
    for _, g in df[df.original != ""].groupby("original"):
        assert g.fold.nunique() == 1  # an original and all its fakes share a fold
    for row in df.itertuples():
        assert (work / row.file).exists()
    orphans = df[(df.label == 1) & (df.original == "")]
    assert orphans.video.nunique() == 2  # unpaired fakes: no original to point at


def test_unpaired_fakes_are_recorded(sample_work):
    work, results = sample_work
    notes = [e for e in read_errors(WorkDir(work).errors("1_extract_crops")) if "note" in e]
    assert len(notes) == 2 and all("unpaired" in e["note"] and "missing" in e["note"] for e in notes)
    assert results["1"].counters["unpaired"] == 2


def test_rerun_skips_everything_and_force_redoes(sample_dir, sample_work, tmp_path):
    work, _ = sample_work
    again = run_steps_0_to_4(sample_dir, work)
    for k, r in again.items():
        assert r.done == 0 and r.failed == 0 and r.skipped == r.total > 0, k
    # a fresh work dir with --force on one step only redoes that step
    from preprocessing.crops import extract_crops

    before = (WorkDir(work).crops_dir(load_dataset(sample_dir).videos[0].id) / "crops.json").stat().st_mtime_ns
    r = extract_crops(make_opts(sample_dir, work, force=True, limit=1))
    assert r.done == 1 and r.total == 1
    after = (WorkDir(work).crops_dir(load_dataset(sample_dir).videos[0].id) / "crops.json").stat().st_mtime_ns
    assert after > before


def test_parts_split_the_work_and_together_cover_it(sample_dir, tmp_path):
    from preprocessing.faces import detect_faces

    totals = [detect_faces(make_opts(sample_dir, tmp_path, part=k, num_parts=2)).total for k in range(2)]
    assert sum(totals) == 6 and all(t > 0 for t in totals)
    assert len(list((tmp_path / "boxes").rglob("*.json"))) == 6


def test_workers_give_the_same_boxes(sample_dir, sample_work, tmp_path):
    from preprocessing.faces import detect_faces

    r = detect_faces(make_opts(sample_dir, tmp_path, workers=2, limit=2))
    assert r.done == 2 and r.failed == 0
    for path in (tmp_path / "boxes").rglob("*.json"):
        ref = json.loads((sample_work[0] / "boxes" / path.relative_to(tmp_path / "boxes")).read_text())
        got = json.loads(path.read_text())
        assert got.keys() == ref.keys() and got["frames"].keys() == ref["frames"].keys()
        for k in got["frames"]:
            np.testing.assert_allclose(got["frames"][k], ref["frames"][k], atol=0.5)


def test_killed_run_leaves_no_half_file_and_resumes(tmp_path):
    """SIGKILL step 0 mid-run: every boxes file left is complete, and a rerun finishes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from preprocessing.sample_data import generate_sample_dataset
    from conftest import REPO

    data = tmp_path / "data"
    generate_sample_dataset(data, folders=1, reals=8, fakes=0, seconds=3.0, size=(320, 240), seed=11)
    work = tmp_path / "work"
    cmd = [sys.executable, "0_detect_faces.py", "--data-dir", str(data), "--work-dir", str(work),
           "--no-progress", "--frame-step", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("boxes/*/*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(work.glob("boxes/*/*.json"))
    assert 2 <= len(finished) < 8
    for path in finished:
        FaceBoxes.load(path)  # complete, parseable JSON
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} skipped" in rerun.stdout and "0 failed" in rerun.stdout
    assert len(list(work.glob("boxes/*/*.json"))) == 8


def test_folds_group_orphans_of_one_absent_original_and_never_go_stale(tmp_path):
    from preprocessing.artifacts import CropManifest, WorkDir
    from preprocessing.folds import generate_folds
    from conftest import write_metadata

    data, work = tmp_path / "d", WorkDir(tmp_path / "w")
    entries = {f"o{i}.mp4": {"label": "FAKE", "original": "gone.mp4"} for i in range(3)}
    entries.update({f"r{i}.mp4": {"label": "REAL", "original": None} for i in range(3)})
    write_metadata(data / "p", entries)
    for name in entries:
        (data / "p" / name).write_bytes(b"x")
        vid = f"p/{name[:-4]}"
        label = entries[name]["label"]
        work.crops_dir(vid).mkdir(parents=True)
        CropManifest(vid, label, vid, False, ["0_0.png", "10_0.png"], 1 / 3).save(work.crop_manifest(vid))
    r = generate_folds(make_opts(data, work.root), folds=2, seed=0)
    assert r.done == 6
    df = pd.read_csv(work.folds, keep_default_na=False)
    assert df[df.video.str.startswith("p/o")].fold.nunique() == 1  # one absent original, one fold
    assert generate_folds(make_opts(data, work.root), folds=2, seed=0).skipped == 6  # unchanged
    work.crop_manifest("p/r2").unlink()
    generate_folds(make_opts(data, work.root), folds=2, seed=0)
    assert "p/r2" not in set(pd.read_csv(work.folds).video)  # recomputed, not stale


def test_data_dir_is_left_untouched(sample_dir, tmp_path):
    def snapshot():
        return sorted((str(p.relative_to(sample_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in sample_dir.rglob("*"))

    before = snapshot()
    run_steps_0_to_4(sample_dir, tmp_path / "w", limit=3)
    assert snapshot() == before
