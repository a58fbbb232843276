"""Step 4: fold assignment balanced by videos per label, and the grouping options."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, WorkDir
from preprocessing.folds import assign_folds, generate_folds
from preprocessing.runner import StepError
from conftest import REPO, make_opts, read_errors, write_metadata


def dfdc_like_groups(n=60, seed=0):
    """(real, fake) video counts: originals with 0-5 fakes, some people filmed in several
    originals, some orphan fakes whose original is absent."""
    rng = np.random.default_rng(seed)
    groups = {}
    for i in range(n):
        kind = rng.random()
        if kind < 0.6:
            groups[f"g{i}"] = (1, int(rng.integers(0, 6)))
        elif kind < 0.8:
            groups[f"g{i}"] = (int(rng.integers(1, 4)), int(rng.integers(0, 12)))
        else:
            groups[f"g{i}"] = (0, int(rng.integers(1, 3)))
    return groups


def fold_counts(groups, fold_of, num_folds):
    load = np.zeros((num_folds, 2), int)
    for g, k in fold_of.items():
        load[k] += groups[g]
    return load


def test_deterministic_and_seed_dependent():
    groups = dfdc_like_groups()
    a = assign_folds(groups, 5, seed=1)
    assert a == assign_folds(groups, 5, seed=1)
    assert set(a.values()) == set(range(5))
    assert any(assign_folds(groups, 5, seed=s) != a for s in range(2, 6))


@pytest.mark.parametrize("num_folds", [2, 3, 5])
@pytest.mark.parametrize("seed", range(8))
def test_real_and_fake_video_counts_are_balanced(num_folds, seed):
    groups = dfdc_like_groups(n=20 + 7 * seed, seed=seed)
    load = fold_counts(groups, assign_folds(groups, num_folds, seed=seed), num_folds)
    largest = np.array(list(groups.values())).max(axis=0)
    spread = load.max(axis=0) - load.min(axis=0)
    assert (spread <= largest).all(), (load.tolist(), largest)
    assert (load.sum(axis=1) > 0).all()


def test_one_label_as_plain_ints():
    sizes = {f"g{i}": (i % 7) + 1 for i in range(40)}
    load = [0] * 5
    for g, k in assign_folds(sizes, 5, seed=0).items():
        load[k] += sizes[g]
    assert max(load) - min(load) <= max(sizes.values())


def test_no_fold_is_left_empty_by_skewed_groups():
    groups = {"big": (30, 90), "a": (1, 0), "b": (0, 1), "c": (1, 1), "d": (0, 2)}
    assert sorted(assign_folds(groups, 5, seed=0).values()) == [0, 1, 2, 3, 4]


def test_fewer_groups_than_folds_is_a_loud_error():
    with pytest.raises(StepError, match="only 3 groups"):
        assign_folds({"a": (1, 0), "b": (1, 2), "c": (0, 3)}, 5, seed=0)


# --------------------------------------------------------------------------- generate_folds
def make_dataset(tmp_path, folders, crops_of=lambda vid: 2):
    """DATA_DIR and WORK_DIR with crop manifests only (no pixels): `folders` maps a folder
    to its originals, each {name: number of fakes}."""
    data, work = tmp_path / "d", WorkDir(tmp_path / "w")
    for folder, originals in folders.items():
        entries = {}
        for name, fakes in originals.items():
            entries[f"{name}.mp4"] = {"label": "REAL", "original": None}
            entries.update({f"{name}_f{j}.mp4": {"label": "FAKE", "original": f"{name}.mp4"} for j in range(fakes)})
        write_metadata(data / folder, entries)
        for file, entry in entries.items():
            (data / folder / file).write_bytes(b"x")
            vid = f"{folder}/{file[:-4]}"
            original = f"{folder}/{entry['original'][:-4]}" if entry["original"] else vid
            crops = [f"{10 * i}_0.png" for i in range(crops_of(original))]
            CropManifest(vid, entry["label"], original, entry["original"] is not None, crops, 1 / 3).save(
                work.crop_manifest(vid))
    return data, work


def video_folds(work):
    df = pd.read_csv(work.folds, keep_default_na=False)
    return df, df.drop_duplicates("video").set_index("video")


def test_a_long_video_does_not_starve_its_fold_of_videos(tmp_path):
    """Folds are balanced by videos, not crops: one original with 100x the crops of the
    others used to fill a fold alone."""
    data, work = make_dataset(tmp_path, {"p": {f"r{i:02d}": 1 for i in range(12)}},
                              crops_of=lambda vid: 200 if vid.endswith("r00") else 2)
    generate_folds(make_opts(data, work.root), folds=3, seed=0)
    df, videos = video_folds(work)
    assert list(df.columns) == ["video", "file", "label", "original", "frame", "face", "fold"]
    per_fold = videos.groupby(["fold", "label"]).size().unstack()
    assert per_fold.shape == (3, 2)
    assert (per_fold.max() - per_fold.min() <= 1).all(), per_fold  # 4 originals and 4 fakes each
    for _, g in df[df.original != ""].groupby("original"):
        assert g.fold.nunique() == 1


def test_group_by_folder_keeps_each_top_folder_in_one_fold(tmp_path):
    folders = {f"dfdc_train_part_{k}": {f"r{i}": 1 for i in range(3)} for k in range(4)}
    data, work = make_dataset(tmp_path, folders)
    r = generate_folds(make_opts(data, work.root), folds=2, seed=0, group_by="folder")
    assert r.counters["groups"] == 4 and r.noted == 0  # no descriptors needed
    _, videos = video_folds(work)
    top = videos.index.str.split("/").str[0]
    assert videos.groupby(top).fold.nunique().eq(1).all()
    assert sorted(videos.groupby(top).fold.first().value_counts()) == [2, 2]
    generate_folds(make_opts(data, work.root), folds=2, seed=0, group_by="original")
    _, videos = video_folds(work)
    assert videos.groupby(videos.index.str.split("/").str[0]).fold.nunique().gt(1).any()


def test_identity_falls_back_to_originals_with_a_note_when_no_descriptor(tmp_path):
    data, work = make_dataset(tmp_path, {"p": {f"r{i}": 1 for i in range(4)}})  # no crop pixels
    r = generate_folds(make_opts(data, work.root), folds=2, seed=0)
    notes = read_errors(work.errors("4_generate_folds"))
    assert r.noted == 4 and sorted(e["video"] for e in notes) == [f"p/r{i}" for i in range(4)]
    assert all("no face descriptor" in e["note"] for e in notes)
    by_identity = pd.read_csv(work.folds)
    generate_folds(make_opts(data, work.root), folds=2, seed=0, group_by="original")
    pd.testing.assert_frame_equal(by_identity, pd.read_csv(work.folds))
    assert read_errors(work.errors("4_generate_folds")) == []  # the notes went with the identity run


def test_bad_grouping_options_are_errors(tmp_path):
    data, work = make_dataset(tmp_path, {"p": {"r0": 0, "r1": 0}})
    with pytest.raises(ValueError, match="--group-by"):
        generate_folds(make_opts(data, work.root), folds=2, group_by="person")
    with pytest.raises(ValueError, match="--identity-threshold"):
        generate_folds(make_opts(data, work.root), folds=2, identity_threshold=0)


def test_cli_group_by_folder(tmp_path):
    data, work = make_dataset(tmp_path, {f"part_{k}": {"r0": 2} for k in range(3)})
    p = subprocess.run([sys.executable, "4_generate_folds.py", "--data-dir", str(data), "--work-dir",
                        str(work.root), "--folds", "3", "--group-by", "folder", "--identity-threshold", "0.5",
                        "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "9 done" in p.stdout and "groups=3" in p.stdout
    _, videos = video_folds(work)
    assert videos.groupby(videos.index.str.split("/").str[0]).fold.nunique().eq(1).all()
