"""Step 6 on a folder of good and broken videos, with a tiny trained ensemble."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from helpers import no_face_clip, truncate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ensemble(sample_work, tmp_path_factory):
    from test_train import tiny
    from training.engine import train

    work, _ = sample_work
    out = tmp_path_factory.mktemp("weights")
    frame = train(tiny(), work, fold=0, weights_dir=out, progress=False).best
    seq_cfg = tiny("DeepFakeClassifierSeq3D", data={"dataset": "sequences", "seq_len": 3}, optimizer={"batch_size": 2})
    seq_cfg["name"] = "tinyseq"
    seq = train(seq_cfg, work, fold=0, weights_dir=out, progress=False).best
    return [str(frame), str(seq)]


@pytest.fixture(scope="module")
def test_dir(sample_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("test_videos")
    good = sorted(sample_dir.rglob("*.mp4"))[:2]
    for g in good:
        shutil.copy(g, d / g.name)
    truncate(good[0], d / "corrupt.mp4", 0.02)
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("definitely not a video\n" * 30)
    no_face_clip(d / "cup.mp4", frames=12)
    return d


def test_one_row_per_file_in_range_with_fallbacks(test_dir, ensemble):
    from inference.predictor import predict_dir

    r = predict_dir(test_dir, ensemble, num_frames=8, strategy="confident", progress=False, workers=2)
    names = [n for n, _ in r.rows]
    assert sorted(names) == sorted(p.name for p in test_dir.iterdir())
    probs = dict(r.rows)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    failed = {e["video"]: e["error"] for e in r.errors}
    assert set(failed) == {"corrupt.mp4", "zero.mp4", "text.mp4", "cup.mp4"}
    assert "no face" in failed["cup.mp4"] and "0 bytes" in failed["zero.mp4"]
    for name in failed:
        assert probs[name] == 0.5
    good = [n for n in names if n not in failed]
    assert len(good) == 2 and all(probs[n] != 0.5 for n in good)
    assert r.timings["frames_decoded"] > 0


@pytest.mark.parametrize("strategy", ["ntech", "mean"])
def test_strategies_and_calibration(test_dir, ensemble, strategy, tmp_path):
    from inference.calibration import save_calibration
    from inference.predictor import predict_dir

    base = dict(predict_dir(test_dir, ensemble, num_frames=8, strategy=strategy, progress=False).rows)
    save_calibration(tmp_path / "t.json", 2.0)
    cal = dict(predict_dir(test_dir, ensemble, num_frames=8, strategy=strategy, progress=False,
                           calibration=tmp_path / "t.json").rows)
    for name, p in base.items():
        if p != 0.5:  # a temperature > 1 pulls predictions towards 0.5
            assert abs(cal[name] - 0.5) < abs(p - 0.5)


def test_bf16_prediction_on_a_cpu_moves_the_scores_little(test_dir, ensemble):
    from inference.predictor import predict_dir

    off = dict(predict_dir(test_dir, ensemble, num_frames=8, progress=False, amp="off").rows)
    on = dict(predict_dir(test_dir, ensemble, num_frames=8, progress=False, amp="on").rows)
    assert on.keys() == off.keys()
    scored = [n for n, p in off.items() if p != 0.5]
    assert len(scored) == 2 and all(on[n] == 0.5 for n in off if n not in scored)
    assert any(on[n] != off[n] for n in scored)  # bf16 did run
    assert all(abs(on[n] - off[n]) < 0.005 for n in scored), (on, off)  # 2.5e-4 measured
    with pytest.raises(ValueError, match="amp must be one of"):
        predict_dir(test_dir, ensemble, num_frames=8, progress=False, amp="fast")


def test_cli_writes_the_csv_and_errors(test_dir, ensemble, tmp_path):
    out = tmp_path / "sub.csv"
    proc = subprocess.run([sys.executable, "6_predict.py", "--test-dir", str(test_dir), "--output", str(out),
                           "--models", *ensemble, "--frames", "8", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["filename", "label"] and len(df) == 6
    assert df.label.between(0, 1).all()
    errors = [json.loads(l) for l in (tmp_path / "sub_errors.jsonl").read_text().splitlines()]
    assert len(errors) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "6_predict.py", "--test-dir", str(empty), "--output", str(out),
                           "--models", *ensemble], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "no video files" in proc.stderr


def test_one_video_check_prints_a_verdict_per_video_and_json_details(test_dir, ensemble):
    """`6_predict.py VIDEO ...` (#9): a line per video (name, P(fake), verdict, faces used),
    and with --json every model's score of every frame and face, consistent with the CSV path."""
    from inference.predictor import predict_dir

    good = sorted(p for p in test_dir.glob("*.mp4") if p.name not in {"corrupt.mp4", "zero.mp4", "text.mp4",
                                                                       "cup.mp4"})[0]
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "6_predict.py", str(good), str(test_dir / "cup.mp4"), "--models", *ensemble,
         "--frames", "8", *extra], cwd=REPO, capture_output=True, text=True)
    proc = run()
    assert proc.returncode == 0, proc.stderr
    lines = [l.split("\t") for l in proc.stdout.strip().splitlines()]
    assert [l[0] for l in lines] == [str(good), str(test_dir / "cup.mp4")]
    assert lines[0][2] in {"FAKE", "REAL"} and (float(lines[0][1]) >= 0.5) == (lines[0][2] == "FAKE")
    assert lines[0][3].endswith("frames") and int(lines[0][3].split()[0]) > 0
    assert lines[1][1:3] == ["0.5000", "UNKNOWN"] and "no face" in lines[1][3]

    details = [json.loads(l) for l in run("--json").stdout.strip().splitlines()]
    d = details[0]
    assert d["video"] == str(good) and d["verdict"] == lines[0][2] and d["p_fake"] == pytest.approx(float(lines[0][1]),
                                                                                                   abs=1e-4)
    frame_model, seq_model = (d["models"][Path(c).stem] for c in ensemble)
    assert len(frame_model["faces"]) == d["faces"] > 0  # one prediction per face crop
    assert all({"frame", "face", "box", "prob"} <= set(f) and 0 <= f["prob"] <= 1 for f in frame_model["faces"])
    assert len(seq_model["faces"]) % 3 == 0  # the 3-frame sequence model: one per frame of each clip
    assert details[1]["verdict"] == "UNKNOWN" and "error" in details[1]
    # the same score as the submission path for the same video
    rows = dict(predict_dir(test_dir, ensemble, num_frames=8, progress=False).rows)
    assert rows[good.name] == pytest.approx(d["p_fake"], abs=1e-4)


def test_predict_submission_script_uses_the_ensemble_file(test_dir, ensemble, tmp_path):
    out = tmp_path / "s.csv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EXTRA_ARGS": "--no-progress --frames 4"}
    proc = subprocess.run(["bash", "predict_submission.sh", str(test_dir), str(out), *ensemble],
                          cwd=REPO, capture_output=True, text=True, env={**env, "VENV": str(REPO / ".venv")}
                          if (REPO / ".venv").exists() else env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(pd.read_csv(out)) == 6


@pytest.fixture(scope="module")
def student(sample_work, ensemble, tmp_path_factory):
    """A tiny ViT-distillation model (the frame model as its teacher): the attention-rollout family."""
    from test_train import tiny
    from training.engine import train

    work, _ = sample_work
    cfg = tiny("DeepFakeClassifierDistill", model={"vit": "deit_tiny_patch16_224"}, distill={"teacher": ensemble[0]})
    cfg["name"] = "tinyvit"
    return str(train(cfg, work, fold=0, weights_dir=tmp_path_factory.mktemp("student"), progress=False).best)


def browser():
    import shutil as sh

    return sh.which("chromium") or sh.which("chromium-browser") or sh.which("google-chrome")


def run_browser(*args, timeout=120):
    return subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--disable-dev-shm-usage", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_explain_writes_a_page_per_video_that_a_browser_renders(test_dir, ensemble, student, tmp_path):
    """`6_predict.py VIDEO ... --explain DIR` (#9): index.html and a page per video; the scored
    video's page has every model with its heatmap kind, the score plot and the frames; the
    faceless video's page says why and still shows its frames. In a real headless browser
    every inlined picture decodes, and the screenshot shows the heatmaps' colours."""
    import re

    import cv2

    from inference.explain import page_name

    good = sorted(p for p in test_dir.glob("*.mp4") if p.name not in {"corrupt.mp4", "zero.mp4", "text.mp4",
                                                                       "cup.mp4"})[0]
    cup = test_dir / "cup.mp4"
    out = tmp_path / "explain"
    proc = subprocess.run([sys.executable, "6_predict.py", str(good), str(cup), "--models", *ensemble, student,
                           "--frames", "8", "--explain", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = proc.stdout.splitlines()[0].split("\t")
    index = (out / "index.html").read_text()
    pages = {v: out / page_name(str(v)) for v in (good, cup)}
    for v, page in pages.items():
        assert page.is_file() and f"href='{page.name}'" in index

    text = pages[good].read_text()
    assert f"<b>{verdict[1]}</b>" in text and verdict[2] in text
    for ckpt in [*ensemble, student]:
        assert Path(ckpt).stem in text
    assert "Grad-CAM" in text and "attention rollout" in text and "of attention on CNN tokens" in text
    assert "face scores over time" in text and "Sampled frames" in text
    rows = text.count("<br>face ")
    assert rows >= 2  # the faces of the sampled frames, each scored by the frame model
    assert text.count(f"alt=\"{Path(ensemble[0]).stem} heatmap\"") == rows
    images = len(re.findall(r"<img ", text))
    assert images >= 8 + 1 + 3  # the sampled frames, the plot, a face with its crop and heatmaps
    assert "src='http" not in text and 'src="http' not in text  # offline: everything inline
    faceless = pages[cup].read_text()
    assert "Not scored" in faceless and "no face" in faceless and "<img " in faceless

    if not browser():
        pytest.skip("no chromium: install it (apt-get install chromium) for the browser check")
    dom = run_browser("--dump-dom", pages[good].as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f"pictures decoded: {images}/{images}" in dom.stdout
    shot = tmp_path / "page.png"
    proc = run_browser(f"--screenshot={shot}", "--window-size=1300,1800", pages[good].as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1800, 1300)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    saturated = (hsv[..., 1] > 150) & (hsv[..., 2] > 100)
    assert saturated.mean() > 0.005  # the heatmaps and boxes are on screen, not a blank page
    assert img.std() > 20


def test_cli_detection_defaults_are_the_library_defaults():
    """6_predict writes its --detect-every / --detect-size defaults out (its --help imports no
    torch); they must be inference.predictor's."""
    from inference.predictor import DEFAULT_DETECT_EVERY, DEFAULT_DETECT_LONG_SIDE

    proc = subprocess.run([sys.executable, "6_predict.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert f"(default {DEFAULT_DETECT_EVERY}: mean box IoU" in text
    assert f"(default {DEFAULT_DETECT_LONG_SIDE} = step 0's scale" in text


def test_decoding_threads_share_the_cores_among_workers(monkeypatch):
    """Each of several prediction workers decodes with its share of the cores (one each on
    2 cores); a single worker leaves FFmpeg its own choice."""
    import os

    from inference.predictor import decode_threads_per_worker

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert decode_threads_per_worker(1) is None and decode_threads_per_worker(2) == 1
    assert decode_threads_per_worker(3) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert decode_threads_per_worker(2) == 8 and decode_threads_per_worker(4) == 4
