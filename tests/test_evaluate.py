"""tools/evaluate.py: metrics against hand-computed values, submission/label matching,
the report files, the CLI's errors, and the face crops of the worst videos."""
import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from conftest import REPO, write_metadata
from helpers import no_face_clip, portrait_clip
from preprocessing.dataset import load_dataset
from tools.evaluate import (TASKS, EvaluationError, compute_metrics, compute_mos_metrics, equal_error_rate,
                            load_submission, main, match_labels, per_video_log_loss, submission_task, worst_videos,
                            write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_csv(path, text):
    path = Path(path)
    path.write_text(text)
    return path


def touch_videos(folder, entries):
    """A DFDC-shaped folder whose videos are empty files: enough for labels and matching."""
    write_metadata(folder, entries)
    for name in entries:
        (Path(folder) / name).write_bytes(b"")


@pytest.fixture
def labelled_dir(tmp_path):
    """part_0: a.mp4 REAL, b.mp4 FAKE, same.mp4 REAL; part_1: c.mp4 FAKE, same.mp4 FAKE."""
    data = tmp_path / "data"
    touch_videos(data / "part_0", {"a.mp4": {"label": "REAL", "original": None},
                                   "b.mp4": {"label": "FAKE", "original": "a.mp4"},
                                   "same.mp4": {"label": "REAL", "original": None}})
    touch_videos(data / "part_1", {"c.mp4": {"label": "FAKE", "original": None},
                                   "same.mp4": {"label": "FAKE", "original": None}})
    return data


# --------------------------------------------------------------------------- metrics
def test_compute_metrics_hand_computed():
    # y: REAL REAL FAKE FAKE; the second REAL and the first FAKE are on the wrong side of 0.5.
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    # log loss = -(ln 0.9 + ln 0.4 + ln 0.4 + ln 0.9) / 4
    assert m["log_loss"] == pytest.approx(0.5108256237659907, abs=1e-12)
    # FAKE-over-REAL pairs ranked right: (0.4>0.1), (0.9>0.1), (0.9>0.6), not (0.4<0.6) -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    # ranked 0.9 F, 0.6 R, 0.4 F: precision 1 at recall 1/2, 2/3 at recall 1 -> (1 + 2/3) / 2
    assert m["average_precision"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["eer"] == pytest.approx(0.5)
    assert (m["videos"], m["real"], m["fake"]) == (4, 2, 2)
    assert m["balanced_log_loss"] == pytest.approx(m["log_loss"])  # two of each: the same


def test_balanced_log_loss_weighs_the_classes_equally():
    m = compute_metrics([0, 0, 0, 1], [0.1, 0.1, 0.1, 0.6])
    assert m["balanced_log_loss"] == pytest.approx((-math.log(0.9) - math.log(0.6)) / 2)
    assert m["log_loss"] == pytest.approx((-3 * math.log(0.9) - math.log(0.6)) / 4)
    assert compute_metrics([0, 1, 1, 1], [0.5] * 4)["balanced_log_loss"] == pytest.approx(math.log(2))


def test_compute_metrics_one_class_has_no_ranking_metrics():
    m = compute_metrics([1, 1, 1], [0.9, 0.8, 0.3])
    assert m["auc"] is None and m["average_precision"] is None and m["eer"] is None
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.3)) / 3)
    assert m["accuracy"] == pytest.approx(2 / 3)
    json.dumps(m)  # valid JSON: None, never NaN


def test_compute_metrics_extreme_predictions_stay_finite():
    m = compute_metrics([0, 1], [1.0, 0.0])  # certain and wrong: sklearn clips, no inf
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 30


def test_equal_error_rate():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0   # separable
    assert equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0   # inverted
    # ROC points (0, 0.5) -> (0.5, 1) across the tie at 0.5: FPR - FNR goes -0.5 -> +0.5,
    # so they meet half way, at FPR = FNR = 0.25.
    assert equal_error_rate([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.8]) == pytest.approx(0.25)
    assert equal_error_rate([0, 1], [0.5, 0.5]) == pytest.approx(0.5)   # chance
    # a vertical ROC step: at threshold 0.7 FPR = 1/4 while FNR falls from 1/2 to 0
    assert equal_error_rate([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.5, 0.9]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        equal_error_rate([1, 1], [0.2, 0.3])


def test_per_video_log_loss_averages_to_sklearn_and_ranks_worst():
    y, p = np.array([0, 1, 1, 0]), np.array([0.2, 0.0, 0.7, 0.99])
    assert per_video_log_loss(y, p).mean() == pytest.approx(log_loss(y, p, labels=[0, 1]))
    matched = pd.DataFrame({"video_id": list("wxyz"), "filename": list("wxyz"), "label": y, "pred": p})
    assert list(worst_videos(matched, 2)["video_id"]) == ["x", "z"]


# --------------------------------------------------------------------------- submission
def test_load_submission_keeps_names_as_text(tmp_path):
    sub = load_submission(write_csv(tmp_path / "s.csv", "filename,label\n001.mp4,0.25\n p/x.mp4 , 1\n"))
    assert list(sub["filename"]) == ["001.mp4", "p/x.mp4"]
    assert list(sub["label"]) == [0.25, 1.0]


@pytest.mark.parametrize("text, expected", [
    ("name,prob\na.mp4,0.5\n", "missing column(s) filename, label"),
    ("filename,label\na.mp4,0.5\nb.mp4,high\nc.mp4,\n", "non-numeric label in row 2 ('b.mp4'"),
    ("filename,label\na.mp4,1.5\nb.mp4,0.5\nc.mp4,-0.1\n", "label outside [0, 1] in row 1 ('a.mp4'"),
    ("filename,label\na.mp4,0.5\na.mp4,0.6\n", "duplicated filename(s) a.mp4"),
    ("filename,label\n", "no rows"),
])
def test_load_submission_rejects_bad_files(tmp_path, text, expected):
    with pytest.raises(EvaluationError) as e:
        load_submission(write_csv(tmp_path / "s.csv", text))
    assert expected in str(e.value)
    if "non-numeric" in expected:
        assert "row 3 ('c.mp4'" in str(e.value)   # every bad row is named, not just the first
    if "outside" in expected:
        assert "row 3 ('c.mp4'" in str(e.value) and "b.mp4" not in str(e.value)


def test_load_submission_missing_file(tmp_path):
    with pytest.raises(EvaluationError, match="not found"):
        load_submission(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- matching
def test_match_by_relative_path_and_by_unique_name(labelled_dir):
    sub = pd.DataFrame({"filename": ["a.mp4", "part_0/b.mp4", "part_1/same.mp4", "ghost.mp4", "part_9/c.mp4"],
                        "label": [0.1, 0.8, 0.7, 0.5, 0.5]})
    matched, report = match_labels(sub, load_dataset(labelled_dir))
    assert list(matched["video_id"]) == ["part_0/a", "part_0/b", "part_1/same"]
    assert list(matched["label"]) == [0, 1, 1]
    assert list(matched["pred"]) == [0.1, 0.8, 0.7]
    assert list(matched["filename"]) == ["a.mp4", "part_0/b.mp4", "part_1/same.mp4"]
    # a path that is not a relative path in DATA_DIR is unknown, not guessed by its name
    assert report["unknown"] == ["ghost.mp4", "part_9/c.mp4"] and report["unknown_count"] == 2
    assert report["missing"] == ["part_0/same.mp4", "part_1/c.mp4"] and report["missing_count"] == 2
    assert (report["submission_rows"], report["labelled_videos"], report["matched"]) == (5, 5, 3)


def test_ambiguous_file_name_is_an_error_naming_the_candidates(labelled_dir):
    sub = pd.DataFrame({"filename": ["a.mp4", "same.mp4"], "label": [0.1, 0.5]})
    with pytest.raises(EvaluationError) as e:
        match_labels(sub, load_dataset(labelled_dir))
    assert "'same.mp4'" in str(e.value)
    assert "part_0/same.mp4" in str(e.value) and "part_1/same.mp4" in str(e.value)


def test_one_video_named_twice_is_an_error(labelled_dir):
    sub = pd.DataFrame({"filename": ["a.mp4", "part_0/a.mp4"], "label": [0.1, 0.2]})
    with pytest.raises(EvaluationError, match="more than one submission row"):
        match_labels(sub, load_dataset(labelled_dir))


# --------------------------------------------------------------------------- report
def check_png(path):
    data = Path(path).read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), path


def test_write_report_without_crops(labelled_dir, tmp_path):
    sub = pd.DataFrame({"filename": ["a.mp4", "part_0/b.mp4", "c.mp4", "part_0/same.mp4", "ghost.mp4"],
                        "label": [0.9, 0.8, 0.05, 0.2, 0.5]})
    matched, report = match_labels(sub, load_dataset(labelled_dir))
    metrics = compute_metrics(matched["label"], matched["pred"])
    paths = write_report(tmp_path / "report", matched, metrics, report, worst=2, crops=False)

    check_png(paths["roc.png"])
    check_png(paths["calibration.png"])
    saved = json.loads(paths["metrics.json"].read_text())
    assert saved["metrics"] == metrics
    assert saved["matching"]["unknown"] == ["ghost.mp4"]
    assert saved["matching"]["missing"] == ["part_1/same.mp4"]
    # the two worst: c (FAKE at 0.05) and a (REAL at 0.9)
    assert [w["video_id"] for w in saved["worst"]] == ["part_1/c", "part_0/a"]

    page = paths["report.html"].read_text()
    assert f"{metrics['log_loss']:.4f}" in page and f"{metrics['auc']:.4f}" in page
    assert "part_1/c<br>" in page and "part_0/a<br>" in page
    assert "part_0/b<br>" not in page           # only the 2 worst are listed
    assert "ghost.mp4" in page and "part_1/same.mp4" in page
    assert page.count("data:image/png;base64,") == 2   # the two plots, no crops
    assert not list(paths["report.html"].parent.glob(".*tmp*"))


def test_worst_videos_link_to_their_explanation_pages(labelled_dir, tmp_path):
    """--explanations (#9): a worst video links to the page 6_predict --explain wrote for its
    submission name, relative to the report; one without a page says so."""
    from inference.explain import page_name

    sub = pd.DataFrame({"filename": ["a.mp4", "part_0/b.mp4", "c.mp4"], "label": [0.9, 0.8, 0.05]})
    matched, report = match_labels(sub, load_dataset(labelled_dir))
    pages = tmp_path / "explain"
    pages.mkdir()
    (pages / page_name("c.mp4")).write_text("<html>c</html>")
    out = tmp_path / "report"
    paths = write_report(out, matched, compute_metrics(matched["label"], matched["pred"]), report, worst=2,
                         crops=False, explanations=pages)
    page = paths["report.html"].read_text()
    assert '<a href="../explain/c.mp4.html">explanation</a>' in page
    assert (out / "../explain/c.mp4.html").resolve().read_text() == "<html>c</html>"
    assert page.count("no explanation page") == 1  # a.mp4 has none
    worst = {w["video_id"]: w for w in json.loads(paths["metrics.json"].read_text())["worst"]}
    assert worst["part_1/c"]["explanation"] == "../explain/c.mp4.html" and worst["part_0/a"]["explanation"] is None


def test_write_report_one_class(labelled_dir, tmp_path):
    sub = pd.DataFrame({"filename": ["part_0/b.mp4", "c.mp4"], "label": [0.7, 0.4]})
    matched, report = match_labels(sub, load_dataset(labelled_dir))
    metrics = compute_metrics(matched["label"], matched["pred"])
    paths = write_report(tmp_path / "r", matched, metrics, report, worst=5, crops=False)
    check_png(paths["roc.png"])
    assert "n/a" in paths["report.html"].read_text()


def test_main_in_process_default_out_dir(labelled_dir, tmp_path, capsys):
    csv = write_csv(tmp_path / "preds.csv", "filename,label\na.mp4,0.2\npart_0/b.mp4,0.7\nc.mp4,0.6\n")
    assert main(["--submission", str(csv), "--data-dir", str(labelled_dir), "--no-crops"]) == 0
    out = capsys.readouterr().out.splitlines()
    report_dir = tmp_path / "preds_report"
    assert out[0].startswith("[evaluate] 3 videos (1 REAL, 2 FAKE): log_loss ")
    assert "auc 1.0000" in out[0] and "| 0 unknown, 2 missing" in out[0]
    assert out[0].endswith(str(report_dir / "report.html"))
    assert out[1] == f"[evaluate] metrics: {report_dir / 'metrics.json'}"
    assert {p.name for p in report_dir.iterdir()} == {"metrics.json", "roc.png", "calibration.png", "report.html"}


# --------------------------------------------------------------------------- CLI errors
def run_cli(*args):
    return subprocess.run([sys.executable, "tools/evaluate.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_inputs_exit_1_with_a_message(labelled_dir, tmp_path):
    good = write_csv(tmp_path / "good.csv", "filename,label\na.mp4,0.2\n")
    cases = [
        (tmp_path / "absent.csv", labelled_dir, "submission file not found"),
        (write_csv(tmp_path / "cols.csv", "video,score\na.mp4,0.2\n"), labelled_dir, "missing column(s)"),
        (write_csv(tmp_path / "text.csv", "filename,label\na.mp4,0.2\nc.mp4,FAKE\n"), labelled_dir,
         "non-numeric label in row 2 ('c.mp4'"),
        (write_csv(tmp_path / "range.csv", "filename,label\na.mp4,2\n"), labelled_dir,
         "label outside [0, 1] in row 1 ('a.mp4'"),
        (good, tmp_path / "no_such_dir", "DATA_DIR not found"),
        (write_csv(tmp_path / "other.csv", "filename,label\nx.mp4,0.2\ny.mp4,0.3\n"), labelled_dir,
         "no submission row matches a labelled video"),
    ]
    for submission, data_dir, message in cases:
        result = run_cli("--submission", submission, "--data-dir", data_dir, "--no-crops")
        assert result.returncode == 1, (message, result.stdout, result.stderr)
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr


def test_cli_success(labelled_dir, tmp_path):
    csv = write_csv(tmp_path / "s.csv", "filename,label\na.mp4,0.2\npart_0/b.mp4,0.7\n")
    result = run_cli("--submission", csv, "--data-dir", labelled_dir, "--out-dir", tmp_path / "rep", "--no-crops")
    assert result.returncode == 0, result.stderr
    assert "[evaluate] 2 videos" in result.stdout and str(tmp_path / "rep" / "report.html") in result.stdout
    assert (tmp_path / "rep" / "metrics.json").is_file()


# --------------------------------------------------------------------------- face crops
@pytest.mark.slow
def test_report_face_crops_on_real_videos(tmp_path, detector):
    """A face clip gets a face crop, a faceless clip its whole frame, a corrupt file a note."""
    data = tmp_path / "data" / "part_0"
    portrait_clip(data / "face.mp4", identity="astronaut", size=(256, 192), frames=12, fps=15)
    no_face_clip(data / "cup.mp4", size=(256, 192), frames=12, fps=15)
    (data / "broken.mp4").write_bytes(b"not a video at all" * 10)
    write_metadata(data, {"face.mp4": {"label": "REAL", "original": None},
                          "cup.mp4": {"label": "FAKE", "original": None},
                          "broken.mp4": {"label": "FAKE", "original": None}})
    sub = pd.DataFrame({"filename": ["face.mp4", "cup.mp4", "broken.mp4"], "label": [0.9, 0.2, 0.3]})
    matched, report = match_labels(sub, load_dataset(tmp_path / "data"))
    metrics = compute_metrics(matched["label"], matched["pred"])
    paths = write_report(tmp_path / "r", matched, metrics, report, worst=3, crops=True, detector=detector)

    page = paths["report.html"].read_text()
    rows = {vid: row for vid, row in re.findall(r"<tr><td>\d+</td><td>(part_0/\w+)<br>(.*?)</tr>", page)}
    assert set(rows) == {"part_0/face", "part_0/cup", "part_0/broken"}
    assert re.search(r"face p=(0\.9\d\d|1\.000)", rows["part_0/face"])  # a confident face
    assert "no face found: whole frame" in rows["part_0/cup"]
    assert "unreadable" in rows["part_0/broken"] and "base64" not in rows["part_0/broken"]

    def embedded(row):
        data = base64.b64decode(re.search(r"base64,([^\"]+)", row).group(1))
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    face, cup = embedded(rows["part_0/face"]), embedded(rows["part_0/cup"])
    assert cup.shape[:2] == (120, 160)                 # the whole 256x192 frame, downscaled
    assert face.shape[0] < 192 and face.shape[1] < 256 and min(face.shape[:2]) > 40  # a crop, not the frame


def test_calibrate_cli_fits_a_temperature_on_overconfident_predictions(tmp_path):
    import json as _json
    import subprocess as _sp
    import sys as _sys

    from conftest import REPO, write_metadata

    data = tmp_path / "data" / "p"
    entries, rows = {}, ["filename,label"]
    rng = np.random.default_rng(0)
    for i in range(40):
        label = i % 2
        entries[f"v{i}.mp4"] = {"label": "FAKE" if label else "REAL", "original": None}
        (data.parent / "p").mkdir(parents=True, exist_ok=True)
        (data / f"v{i}.mp4").write_bytes(b"x")
        # right 70% of the time, but always 0.99 / 0.01 sure: over-confident
        right = rng.random() < 0.7
        rows.append(f"v{i}.mp4,{0.99 if (label == 1) == right else 0.01}")
    write_metadata(data, entries)
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cal.json"
    proc = _sp.run([_sys.executable, "tools/calibrate.py", "--submission", str(tmp_path / "val.csv"),
                    "--data-dir", str(tmp_path / "data"), "--output", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cal = _json.loads(out.read_text())
    assert cal["temperature"] > 1 and cal["log_loss_after"] < cal["log_loss_before"]


# --------------------------------------------------------------------------- realism (MOS, #10)
@pytest.fixture
def mos_dir(tmp_path):
    """part_0: a, b, c rated 1, 2, 3; d (REAL) not rated; e rated 4. part_1: f, not rated."""
    data = tmp_path / "mos_data"
    touch_videos(data / "part_0", {"a.mp4": {"label": "FAKE", "original": None, "mos": 1},
                                   "b.mp4": {"label": "FAKE", "original": None, "mos": 2.0},
                                   "c.mp4": {"label": "FAKE", "original": None, "mos": 3.0},
                                   "d.mp4": {"label": "REAL", "original": None},
                                   "e.mp4": {"label": "FAKE", "original": None, "mos": 4.0}})
    touch_videos(data / "part_1", {"f.mp4": {"label": "REAL", "original": None, "mos": None}})
    return data


def mos_submission(tmp_path, rows, name="mos.csv"):
    return write_csv(tmp_path / name, "filename,mos\n" + "".join(f"{f},{v}\n" for f, v in rows))


def test_load_submission_reads_a_mos_submission(tmp_path):
    csv = mos_submission(tmp_path, [("a.mp4", "4.5"), ("p/b.mp4", " -0.25 "), ("c.mp4", "7")])
    sub = load_submission(csv, tasks=TASKS)
    assert submission_task(sub) == "mos"
    assert list(sub.columns) == ["filename", "mos"]
    assert list(sub["mos"]) == [4.5, -0.25, 7.0]   # no [0, 1] range: any finite number
    # callers that need probabilities (the default, as calibrate.py) are told, not handed MOS values
    with pytest.raises(EvaluationError, match="a realism submission"):
        load_submission(csv)
    # a detection submission with an extra mos column stays a detection submission
    both = load_submission(write_csv(tmp_path / "both.csv", "filename,label,mos\na.mp4,0.3,2\n"), tasks=TASKS)
    assert submission_task(both) == "detection" and list(both.columns) == ["filename", "label"]


@pytest.mark.parametrize("text, expected, also, good", [
    ("filename,mos\na.mp4,2\nb.mp4,good\nc.mp4,\n", "non-numeric mos in row 2 ('b.mp4': 'good')",
     "row 3 ('c.mp4'", "a.mp4"),
    ("filename,mos\na.mp4,nan\nb.mp4,3\nc.mp4,inf\n", "non-finite mos (NaN or infinite) in row 1 ('a.mp4'",
     "row 3 ('c.mp4'", "b.mp4"),
    ("filename,mos\na.mp4,2\na.mp4,3\n", "duplicated filename(s) a.mp4", None, None),
    ("filename,mos\n", "no rows", None, None),
    ("name,score\na.mp4,2\n", "missing column(s) filename, label; expected the columns 'filename,label' "
                              "(or 'filename,mos' for realism scores)", None, None),
])
def test_load_submission_rejects_bad_mos_files(tmp_path, text, expected, also, good):
    with pytest.raises(EvaluationError) as e:
        load_submission(write_csv(tmp_path / "s.csv", text), tasks=TASKS)
    assert expected in str(e.value)
    if also:
        assert also in str(e.value)       # every bad row is named, not just the first
    if good:
        assert good not in str(e.value)   # and no good one


def test_match_mos_leaves_unrated_videos_out(mos_dir):
    sub = pd.DataFrame({"filename": ["a.mp4", "part_0/b.mp4", "c.mp4", "d.mp4", "f.mp4", "ghost.mp4"],
                        "mos": [1.5, 2.0, 2.5, 4.0, 3.0, 5.0]})
    matched, report = match_labels(sub, load_dataset(mos_dir))
    assert list(matched["video_id"]) == ["part_0/a", "part_0/b", "part_0/c"]
    assert list(matched["mos"]) == [1.0, 2.0, 3.0] and list(matched["pred"]) == [1.5, 2.0, 2.5]
    assert report["unrated"] == ["d.mp4", "f.mp4"] and report["unrated_count"] == 2
    assert report["unknown"] == ["ghost.mp4"]
    assert report["missing"] == ["part_0/e.mp4"]           # the rated videos without a row only
    assert (report["submission_rows"], report["labelled_videos"], report["rated_videos"], report["matched"]) \
        == (6, 6, 4, 3)


def test_mos_submission_without_any_rating_is_an_error(labelled_dir, tmp_path, capsys):
    sub = pd.DataFrame({"filename": ["a.mp4"], "mos": [2.0]})
    with pytest.raises(EvaluationError, match='no video under DATA_DIR has a "mos" in its metadata.json'):
        match_labels(sub, load_dataset(labelled_dir))
    csv = mos_submission(tmp_path, [("a.mp4", 2.0)])
    assert main(["--submission", str(csv), "--data-dir", str(labelled_dir), "--no-crops"]) == 1
    err = capsys.readouterr().err
    assert 'no video under DATA_DIR has a "mos" in its metadata.json' in err and str(labelled_dir) in err


def test_compute_mos_metrics_hand_computed():
    m = compute_mos_metrics([1, 2, 3], [1.5, 2, 2.5])
    assert m["videos"] == 3
    assert m["plcc"] == pytest.approx(1.0) and m["srcc"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 6)) and m["mae"] == pytest.approx(1 / 3)
    # inverted ranking, errors 2, 0, 2
    m = compute_mos_metrics([1, 2, 3], [3, 2, 1])
    assert m["plcc"] == pytest.approx(-1.0) and m["srcc"] == pytest.approx(-1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(8 / 3)) and m["mae"] == pytest.approx(4 / 3)
    # a constant prediction has no correlation: None, so metrics.json stays valid JSON
    m = compute_mos_metrics([1, 2, 3], [2, 2, 2])
    assert m["plcc"] is None and m["srcc"] is None and m["rmse"] == pytest.approx(math.sqrt(2 / 3))
    json.dumps(m, allow_nan=False)


def test_worst_videos_mos_by_absolute_error():
    matched = pd.DataFrame({"video_id": list("wxyz"), "filename": list("wxyz"), "label": [1] * 4,
                            "mos": [1.0, 2.0, 3.0, 4.0], "pred": [1.2, 3.5, 2.5, 4.0]})
    worst = worst_videos(matched, 3)
    assert list(worst["video_id"]) == ["x", "y", "w"]
    assert list(worst["error"]) == pytest.approx([1.5, -0.5, 0.2])


def test_write_mos_report_lists_the_worst_first(mos_dir, tmp_path):
    sub = pd.DataFrame({"filename": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "mos": [1.2, 3.5, 2.5, 1.0]})
    matched, report = match_labels(sub, load_dataset(mos_dir))
    metrics = compute_mos_metrics(matched["mos"], matched["pred"])
    paths = write_report(tmp_path / "r", matched, metrics, report, worst=2, crops=False)
    assert set(paths) == {"metrics.json", "scatter.png", "report.html"}
    check_png(paths["scatter.png"])
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"metrics.json", "scatter.png", "report.html"}
    saved = json.loads(paths["metrics.json"].read_text())
    assert saved["task"] == "mos" and saved["metrics"] == metrics
    assert saved["matching"]["unrated"] == ["d.mp4"]
    assert saved["worst"][0] == {"video_id": "part_0/b", "filename": "b.mp4", "mos": 2.0, "pred": 3.5, "error": 1.5}
    assert [w["video_id"] for w in saved["worst"]] == ["part_0/b", "part_0/c"]

    page = paths["report.html"].read_text()
    rows = re.findall(r"<tr><td>(\d+)</td><td>([\w/]+)<br><small>[^<]*</small></td>"
                      r"<td>([-\d.]+)</td><td>([-\d.]+)</td><td>([-+\d.]+)</td>", page)
    assert rows == [("1", "part_0/b", "2.0000", "3.5000", "+1.5000"),
                    ("2", "part_0/c", "3.0000", "2.5000", "-0.5000")]
    assert "part_0/a<br>" not in page                       # only the 2 worst are listed
    assert "largest absolute error" in page and "true MOS" in page and "predicted MOS" in page
    assert 'alt="predicted vs true MOS"' in page and page.count("data:image/png;base64,") == 1
    assert "PLCC (Pearson)" in page and f"{metrics['rmse']:.4f}" in page
    assert "d.mp4" in page and "(unrated)" in page and "part_0/e.mp4" in page
    assert "ROC AUC" not in page and "log loss" not in page


def test_mos_worst_videos_link_to_their_explanation_pages(mos_dir, tmp_path):
    from inference.explain import page_name

    sub = pd.DataFrame({"filename": ["a.mp4", "b.mp4"], "mos": [1.1, 3.0]})
    matched, report = match_labels(sub, load_dataset(mos_dir))
    pages = tmp_path / "explain"
    pages.mkdir()
    (pages / page_name("b.mp4")).write_text("<html>b</html>")
    paths = write_report(tmp_path / "report", matched, compute_mos_metrics(matched["mos"], matched["pred"]),
                         report, worst=2, crops=False, explanations=pages)
    page = paths["report.html"].read_text()
    assert '<a href="../explain/b.mp4.html">explanation</a>' in page and page.count("no explanation page") == 1
    worst = {w["video_id"]: w for w in json.loads(paths["metrics.json"].read_text())["worst"]}
    assert worst["part_0/b"]["explanation"] == "../explain/b.mp4.html" and worst["part_0/a"]["explanation"] is None


def test_main_mos_submission_hand_computed(mos_dir, tmp_path, capsys):
    csv = mos_submission(tmp_path, [("a.mp4", 1.5), ("part_0/b.mp4", 2), ("c.mp4", 2.5), ("d.mp4", 3),
                                    ("ghost.mp4", 1)], name="realism.csv")
    assert main(["--submission", str(csv), "--data-dir", str(mos_dir), "--no-crops"]) == 0
    out = capsys.readouterr().out.splitlines()
    report_dir = tmp_path / "realism_report"
    assert out[0] == (f"[evaluate] 3 videos with a MOS: plcc 1.0000 srcc 1.0000 rmse {math.sqrt(1 / 6):.4f} "
                      f"mae 0.3333 | 1 unknown, 1 unrated, 1 missing -> {report_dir / 'report.html'}")
    assert out[1] == f"[evaluate] metrics: {report_dir / 'metrics.json'}"
    assert {p.name for p in report_dir.iterdir()} == {"metrics.json", "scatter.png", "report.html"}
    saved = json.loads((report_dir / "metrics.json").read_text())
    assert saved["task"] == "mos"
    m = saved["metrics"]
    assert m["videos"] == 3 and m["plcc"] == pytest.approx(1) and m["srcc"] == pytest.approx(1)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 6)) and m["mae"] == pytest.approx(1 / 3)
    assert saved["matching"]["unrated"] == ["d.mp4"] and saved["matching"]["unknown"] == ["ghost.mp4"]
    assert saved["matching"]["missing"] == ["part_0/e.mp4"]
    # a and c are both 0.5 off: the tie goes by video id, b (exact) comes last
    assert [(w["video_id"], w["error"]) for w in saved["worst"]] == [("part_0/a", 0.5), ("part_0/c", -0.5),
                                                                       ("part_0/b", 0.0)]
    page = (report_dir / "report.html").read_text()
    assert 'alt="predicted vs true MOS"' in page
    assert page.index("part_0/a<br>") < page.index("part_0/c<br>") < page.index("part_0/b<br>")


def test_main_mos_errors_name_the_rows(mos_dir, labelled_dir, tmp_path, capsys):
    bad = mos_submission(tmp_path, [("a.mp4", 2), ("b.mp4", "great"), ("c.mp4", 3)])
    assert main(["--submission", str(bad), "--data-dir", str(mos_dir), "--no-crops"]) == 1
    assert "non-numeric mos in row 2 ('b.mp4': 'great')" in capsys.readouterr().err
    unrated = mos_submission(tmp_path, [("d.mp4", 2)], name="unrated.csv")
    assert main(["--submission", str(unrated), "--data-dir", str(mos_dir), "--no-crops"]) == 1
    err = capsys.readouterr().err
    assert "no submission row matches a video with a MOS" in err and "1 of them naming a video without a MOS" in err


def test_label_submission_on_a_mos_folder_is_scored_as_before(mos_dir, tmp_path, capsys):
    """The "mos" keys change nothing for a detection submission (extra mos column included)."""
    csv = write_csv(tmp_path / "labels.csv", "filename,label,mos\na.mp4,0.9,3\nb.mp4,0.3,1\nd.mp4,0.4,2\n"
                                             "f.mp4,0.2,5\n")
    sub = load_submission(csv, tasks=TASKS)
    matched, report = match_labels(sub, load_dataset(mos_dir))
    assert list(matched.columns) == ["video_id", "filename", "label", "pred", "path"]
    assert "unrated" not in report and report["missing"] == ["part_0/c.mp4", "part_0/e.mp4"]
    assert main(["--submission", str(csv), "--data-dir", str(mos_dir), "--no-crops"]) == 0
    out = capsys.readouterr().out.splitlines()
    # REAL d 0.4, f 0.2; FAKE a 0.9, b 0.3: 3 of the 4 FAKE-over-REAL pairs ranked right
    assert out[0].startswith("[evaluate] 4 videos (2 REAL, 2 FAKE): log_loss ") and "auc 0.7500" in out[0]
    report_dir = tmp_path / "labels_report"
    assert {p.name for p in report_dir.iterdir()} == {"metrics.json", "roc.png", "calibration.png", "report.html"}
    saved = json.loads((report_dir / "metrics.json").read_text())
    assert saved["task"] == "detection"
    assert saved["metrics"] == compute_metrics([1, 1, 0, 0], [0.9, 0.3, 0.4, 0.2])
