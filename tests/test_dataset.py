import json

import pytest

from preprocessing.dataset import MetadataError, load_dataset, load_metadata, shard
from preprocessing.runner import StepOptions
from conftest import write_metadata


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


def test_ids_labels_and_originals(tmp_path):
    write_metadata(tmp_path / "part_0", {
        "a.mp4": {"label": "REAL", "original": None},
        "b.mp4": {"label": "FAKE", "original": "a.mp4"},
        "c.mp4": {"label": "FAKE", "original": "gone.mp4"},
    })
    for n in "abc":
        _touch(tmp_path / "part_0" / f"{n}.mp4")
    ds = load_dataset(tmp_path)
    v = ds.by_id()
    assert set(v) == {"part_0/a", "part_0/b", "part_0/c"}
    assert v["part_0/b"].original == "part_0/a" and v["part_0/b"].original_present
    assert v["part_0/b"].group == "part_0/a" and not v["part_0/b"].detects_own_faces
    assert v["part_0/c"].original == "part_0/gone" and not v["part_0/c"].original_present
    assert v["part_0/c"].detects_own_faces  # an orphan fake gets its own boxes
    assert v["part_0/a"].detects_own_faces and v["part_0/a"].original is None
    assert ds.errors == []


def test_a_folder_of_links_combines_datasets_without_copying(tmp_path):
    """run_all.sh DIR1 DIR2 trains on WORK_DIR/data_links/{DIR1,DIR2} -> the datasets:
    links are followed, each real folder is read once (a cycle does not loop), hidden
    folders are left out, and ids get the dataset's name in front."""
    for name in ("train-videos", "dev-videos"):
        write_metadata(tmp_path / name / "part", {"a.mp4": {"label": "REAL", "original": None},
                                                  "b.mp4": {"label": "FAKE", "original": "a.mp4"}})
        for n in "ab":
            _touch(tmp_path / name / "part" / f"{n}.mp4")
    _touch(tmp_path / "dev-videos" / ".cache" / "x.mp4")
    (tmp_path / "dev-videos" / "part" / "loop").symlink_to(tmp_path / "dev-videos")  # a cycle
    links = tmp_path / "work" / "data_links"
    links.mkdir(parents=True)
    for name in ("train-videos", "dev-videos"):
        (links / name).symlink_to(tmp_path / name)
    ds = load_dataset(links)
    v = ds.by_id()
    assert set(v) == {"train-videos/part/a", "train-videos/part/b", "dev-videos/part/a", "dev-videos/part/b"}
    assert v["dev-videos/part/b"].original == "dev-videos/part/a" and v["dev-videos/part/b"].original_present
    assert ds.errors == []
    StepOptions(data_dir=links, work_dir=tmp_path / "work")  # the links live inside WORK_DIR: allowed


def test_missing_metadata_is_reported_with_the_file_name(tmp_path):
    _touch(tmp_path / "no_meta" / "x.mp4")
    write_metadata(tmp_path / "ok", {"y.mp4": {"label": "REAL", "original": None}})
    _touch(tmp_path / "ok" / "y.mp4")
    ds = load_dataset(tmp_path)
    assert [v.id for v in ds.videos] == ["ok/y"]  # the good folder still counts
    assert len(ds.errors) == 1
    assert str(tmp_path / "no_meta" / "metadata.json") in ds.errors[0]["error"]
    assert "missing" in ds.errors[0]["error"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected an object"),
    ('{"a.mp4": {"label": "MAYBE"}}', "label 'MAYBE'"),
    ('{"a.mp4": {"label": "FAKE", "original": 3}}', "non-string original"),
])
def test_invalid_metadata_names_the_file(tmp_path, content, message):
    (tmp_path / "metadata.json").write_text(content)
    with pytest.raises(MetadataError) as e:
        load_metadata(tmp_path / "metadata.json")
    assert str(tmp_path / "metadata.json") in str(e.value) and message in str(e.value)


def test_unlisted_and_missing_files_are_errors_not_crashes(tmp_path):
    write_metadata(tmp_path / "p", {"listed.mp4": {"label": "REAL", "original": None},
                                     "absent.mp4": {"label": "REAL", "original": None}})
    _touch(tmp_path / "p" / "listed.mp4")
    _touch(tmp_path / "p" / "stray.mpg")
    ds = load_dataset(tmp_path)
    assert [v.id for v in ds.videos] == ["p/listed"]
    msgs = {e["video"]: e["error"] for e in ds.errors}
    assert "file is missing" in msgs["p/absent"] and "not listed" in msgs["p/stray"]


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_shard_is_stable_disjoint_and_keeps_groups_together():
    items = [(f"v{i}", f"g{i // 3}") for i in range(60)]
    parts = [shard(items, key=lambda t: t[1], part=k, num_parts=3) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(items)
    for k, p in enumerate(parts):
        assert p == shard(items, key=lambda t: t[1], part=k, num_parts=3)
        other = {g for j, q in enumerate(parts) if j != k for _, g in q}
        assert not {g for _, g in p} & other
    with pytest.raises(ValueError):
        shard(items, key=lambda t: t[1], part=3, num_parts=3)


def test_work_dir_inside_data_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match="read-only"):
        StepOptions(data_dir=tmp_path, work_dir=tmp_path / "work")
    with pytest.raises(ValueError, match="--part"):
        StepOptions(data_dir=tmp_path / "d", work_dir=tmp_path / "w", part=2, num_parts=2)
