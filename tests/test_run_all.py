"""bash run_all.sh end to end on a tiny generated sample (slow; run in CI)."""
import json
import os
import subprocess

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_run_all_on_the_sample_trains_predicts_and_evaluates(tmp_path):
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), WORK_ROOT=str(tmp_path / "work"),
               WEIGHTS_DIR=str(tmp_path / "weights"), NUM_GPUS="0",
               SAMPLE_ARGS="--seconds 2 --size 256 192", TRAIN_ARGS="--epochs 1 --no-progress",
               EXTRA_ARGS="--no-progress", PREDICT_ARGS="--no-progress --frames 8")
    proc = subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = tmp_path / "weights"
    ensemble = (weights / "ensemble.txt").read_text().split()
    assert [os.path.basename(p) for p in ensemble] == [
        "lite0_cpu_fold0_best.pt", "lite0_seq3d_cpu_fold0_best.pt", "deit_distill_cpu_fold0_best.pt"]
    assert all(os.path.exists(p) for p in ensemble)
    sub = pd.read_csv(tmp_path / "work" / "sample" / "submission_sample_heldout.csv")
    assert len(sub) == 6 and sub.label.between(0, 1).all()
    report = tmp_path / "work" / "sample" / "submission_sample_heldout_report"
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert metrics["videos"] == 6 and 0 <= metrics["log_loss"] < 5
    assert (report / "report.html").stat().st_size > 1000

    # a second run finds everything done and only predicts again
    again = subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("exists: skipping training") == 3
    assert "0 done" in again.stdout
