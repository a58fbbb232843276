"""Realism ratings (MOS, issue #10): metadata "mos" -> Video.mos -> folds.csv `mos` column,
and tools/import_mos_labels.py writing DFGC's label CSVs into metadata.json files."""
import json
import math

import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, WorkDir
from preprocessing.dataset import MetadataError, MissingMosError, load_dataset, load_metadata, require_mos
from preprocessing.folds import build_rows, generate_folds
from tools.import_mos_labels import import_mos_labels, main, read_labels
from conftest import make_opts, write_metadata


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


def make_data(root, entries, folder="part"):
    """DATA_DIR/folder with `entries` (metadata.json) and a tiny file per entry."""
    write_metadata(root / folder, entries)
    for name in entries:
        _touch(root / folder / name)
    return root


# --------------------------------------------------------------------------- metadata
def test_mos_is_read_into_the_video(tmp_path):
    make_data(tmp_path, {"a.mp4": {"label": "REAL", "original": None},
                         "b.mp4": {"label": "FAKE", "original": "a.mp4", "mos": 3.42},
                         "c.mp4": {"label": "FAKE", "original": "a.mp4", "mos": 4},
                         "d.mp4": {"label": "FAKE", "original": None, "mos": None}})
    ds = load_dataset(tmp_path)
    v = ds.by_id()
    assert ds.errors == []
    assert v["part/a"].mos is None and v["part/d"].mos is None  # null: not rated
    assert v["part/b"].mos == 3.42
    assert v["part/c"].mos == 4.0 and isinstance(v["part/c"].mos, float)


@pytest.mark.parametrize("bad", ["high", "3.4", True, float("nan"), float("inf"), [3], {"v": 3}])
def test_a_mos_that_is_not_a_finite_number_is_an_error_naming_the_entry(tmp_path, bad):
    folder = tmp_path / "part"
    folder.mkdir()
    # json.dumps writes NaN / Infinity, which Python's json (like the DFDC tools) reads back.
    (folder / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL", "original": None},
                                                      "b.mp4": {"label": "FAKE", "original": None, "mos": bad}}))
    with pytest.raises(MetadataError, match=r"metadata\.json: entry 'b\.mp4' has mos .*finite number"):
        load_metadata(folder / "metadata.json")
    _touch(folder / "b.mp4")
    ds = load_dataset(tmp_path)  # the folder is reported, not fatal
    assert ds.videos == [] and "'b.mp4' has mos" in ds.errors[0]["error"]


def test_require_mos_names_the_fakes_without_one(tmp_path):
    entries = {"r.mp4": {"label": "REAL", "original": None},
               "f0.mp4": {"label": "FAKE", "original": "r.mp4", "mos": 2.5}}
    entries.update({f"g{i}.mp4": {"label": "FAKE", "original": "r.mp4"} for i in range(7)})
    make_data(tmp_path, entries)
    videos = load_dataset(tmp_path).videos
    with pytest.raises(MissingMosError) as e:
        require_mos(videos)
    msg = str(e.value)
    assert msg.startswith("7 of 9 videos have no \"mos\"")
    assert "part/g0 (" in msg and "metadata.json" in msg and "and 2 more" in msg
    assert "part/r" not in msg  # a REAL without one is simply not rated
    assert isinstance(e.value, MetadataError)
    rated = [v for v in videos if v.mos is not None or not v.is_fake]
    assert require_mos(rated) == {"part/f0": 2.5}
    with pytest.raises(MissingMosError, match="part/r"):
        require_mos(rated, needs=lambda v: True)


# --------------------------------------------------------------------------- folds.csv
def make_work(tmp_path, entries, crops=2):
    """DATA_DIR with one folder of `entries` and WORK_DIR with crop manifests (no pixels)."""
    data, work = make_data(tmp_path / "d", entries), WorkDir(tmp_path / "w")
    for file, entry in entries.items():
        vid = f"part/{file[:-4]}"
        original = f"part/{entry['original'][:-4]}" if entry["original"] else vid
        CropManifest(vid, entry["label"], original, entry["original"] is not None,
                     [f"{10 * i}_0.png" for i in range(crops)], 1 / 3).save(work.crop_manifest(vid))
    return data, work


def pairs(n, mos=lambda i: None):
    entries = {}
    for i in range(n):
        entries[f"r{i}.mp4"] = {"label": "REAL", "original": None}
        entries[f"r{i}_f.mp4"] = {"label": "FAKE", "original": f"r{i}.mp4"}
        if mos(i) is not None:
            entries[f"r{i}_f.mp4"]["mos"] = mos(i)
    return entries


def test_folds_get_a_mos_column_only_when_some_video_is_rated(tmp_path):
    data, work = make_work(tmp_path / "plain", pairs(4))
    df, _ = build_rows(make_opts(data, work.root))
    assert "mos" not in df.columns
    generate_folds(make_opts(data, work.root), folds=2, seed=0, group_by="original")
    plain = work.folds.read_text()
    assert plain.splitlines()[0] == "video,file,label,original,frame,face,fold"

    data, work = make_work(tmp_path / "rated", pairs(4, mos=lambda i: [4.4, 3, None, 1.25][i]))
    df, _ = build_rows(make_opts(data, work.root))
    assert list(df.columns)[-1] == "mos" and df.mos.dtype == float
    by_video = df.drop_duplicates("video").set_index("video").mos
    assert by_video["part/r0_f"] == 4.4 and by_video["part/r1_f"] == 3.0
    assert math.isnan(by_video["part/r2_f"]) and math.isnan(by_video["part/r0"])
    generate_folds(make_opts(data, work.root), folds=2, seed=0, group_by="original")
    text = work.folds.read_text()
    lines = text.splitlines()
    assert lines[0] == "video,file,label,original,frame,face,fold,mos"
    assert [l for l in lines if l.startswith("part/r0_f,")][0].endswith(",4.4")
    assert [l for l in lines if l.startswith("part/r1_f,")][0].endswith(",3.0")
    assert [l for l in lines if l.startswith("part/r2_f,")][0].endswith(",")
    # Apart from the column, the same rows and folds as without ratings.
    assert [l.rsplit(",", 1)[0] for l in lines] == plain.splitlines()
    # How training reads it: a float column, NaN where a video has no rating.
    read = pd.read_csv(work.folds, keep_default_na=False, na_values={"mos": [""]},
                       dtype={"video": str, "file": str, "original": str, "mos": float})
    assert read.mos.dtype == float and read.mos.isna().sum() == 2 * 5  # 4 REALs and r2_f unrated, 2 crops each


# --------------------------------------------------------------------------- importer
def write_csv(path, text):
    path.write_text(text)
    return path


def test_import_adds_and_updates_entries_keeping_other_keys(tmp_path):
    data = make_data(tmp_path / "data", {"a.mp4": {"label": "FAKE", "original": "o.mp4", "extra": [1]},
                                         "b.mp4": {"label": "FAKE", "original": None, "mos": 1.0}},
                     folder="C1")
    _touch(data / "C1" / "new.mp4")
    _touch(data / "C2" / "x.mp4")  # a folder without metadata.json yet
    labels = write_csv(tmp_path / "labels.csv", "file,mos,note\nC1/a.mp4,4.4,x\nC1/b.mp4,1\n"
                                                "C1/new.mp4,2.5,y\nC2\\x.mp4,3,\nC1/a.mp4,4.40,dup\n")
    r = import_mos_labels(labels, data)
    assert (r.rows, r.updated, r.added, r.unchanged, r.errors) == (5, 1, 2, 1, [])
    meta = json.loads((data / "C1" / "metadata.json").read_text())
    assert meta == {"a.mp4": {"label": "FAKE", "original": "o.mp4", "extra": [1], "mos": 4.4},
                    "b.mp4": {"label": "FAKE", "original": None, "mos": 1.0},
                    "new.mp4": {"label": "FAKE", "original": None, "mos": 2.5}}
    text = (data / "C2" / "metadata.json").read_text()
    assert text == json.dumps({"x.mp4": {"label": "FAKE", "mos": 3.0, "original": None}}, indent=1, sort_keys=True)
    v = load_dataset(data).by_id()
    assert {k: x.mos for k, x in v.items()} == {"C1/a": 4.4, "C1/b": 1.0, "C1/new": 2.5, "C2/x": 3.0}
    assert require_mos(v.values()) and not load_dataset(data).errors
    assert "5 rows read: 1 entries updated, 2 added, 1 unchanged, 0 errors" in r.summary()
    before = (data / "C1" / "metadata.json").stat().st_mtime_ns
    assert main([str(labels), str(data), "--label", "REAL"]) == 0  # nothing changes: nothing rewritten
    assert (data / "C1" / "metadata.json").stat().st_mtime_ns == before


def test_import_errors_name_the_row_and_do_not_stop_the_others(tmp_path, capsys):
    data = make_data(tmp_path / "data", {"a.mp4": {"label": "FAKE", "original": None}}, folder="C1")
    for n in ("b", "c", "d", "e"):
        _touch(data / "C1" / f"{n}.mp4")
    labels = write_csv(tmp_path / "labels.csv",
                       "file,mos\nC1/a.mp4,high\nC1/b.mp4,\nC1/gone.mp4,3\nC1/c.mp4,2\n"
                       "C1/d.mp4,1\nC1/d.mp4,5\nC1/e.mp4,nan\nC1/b.mp4,3.5\n../x.mp4,1\n")
    assert main([str(labels), str(data)]) == 1
    out, err = capsys.readouterr()
    assert f"{labels}:2: C1/a.mp4: mos 'high' is not a number" in err
    assert f"{labels}:3: C1/b.mp4: mos is missing" in err
    assert f"{labels}:4: C1/gone.mp4: no such file" in err
    assert "C1/d.mp4 is listed with different mos values: 1 (line 6), 5 (line 7)" in err
    assert f"{labels}:8: C1/e.mp4: mos 'nan' is not a finite number" in err
    assert f"{labels}:10: file '../x.mp4' is not a path inside DATA_DIR" in err
    assert "9 rows read: 0 entries updated, 2 added, 0 unchanged, 6 errors" in out
    meta = json.loads((data / "C1" / "metadata.json").read_text())
    assert meta["c.mp4"]["mos"] == 2.0 and meta["b.mp4"]["mos"] == 3.5  # the good rows were written
    assert "mos" not in meta["a.mp4"] and "d.mp4" not in meta and "e.mp4" not in meta


def test_import_dry_run_writes_nothing(tmp_path, capsys):
    data = make_data(tmp_path / "data", {"a.mp4": {"label": "FAKE", "original": None}}, folder="C1")
    _touch(data / "C2" / "b.mp4")
    before = (data / "C1" / "metadata.json").read_text()
    labels = write_csv(tmp_path / "labels.csv", "file,mos\nC1/a.mp4,4\nC2/b.mp4,2\n")
    assert main([str(labels), str(data), "--dry-run"]) == 0
    assert "1 entries updated, 1 added" in capsys.readouterr().out
    assert (data / "C1" / "metadata.json").read_text() == before
    assert not (data / "C2" / "metadata.json").exists()
    assert sorted(p.name for p in (data / "C1").iterdir()) == ["a.mp4", "metadata.json"]  # no temp files


def test_import_needs_a_file_and_a_mos_column(tmp_path, capsys):
    labels = write_csv(tmp_path / "labels.csv", "name,score\nC1/a.mp4,4\n")
    with pytest.raises(ValueError, match="no column 'file' or 'mos'"):
        read_labels(labels)
    (tmp_path / "data").mkdir()
    assert main([str(labels), str(tmp_path / "data")]) == 2
    assert "expected a header 'file,mos'" in capsys.readouterr().err
