#!/usr/bin/env python
"""Fit a temperature on validation predictions, for `6_predict.py --calibration`.

    python tools/calibrate.py --submission VAL.csv --data-dir VAL_DATA_DIR --output weights/calibration.json

Log loss is the competition metric and punishes over-confidence hard; one scalar T
(p' = sigmoid(logit(p) / T)), fitted on held-out videos, fixes most of it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.calibration import apply_temperature, fit_temperature, save_calibration  # noqa: E402
from preprocessing.dataset import load_dataset  # noqa: E402
from tools.evaluate import EvaluationError, compute_metrics, load_submission, match_labels  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submission", required=True, type=Path, help="predictions on labelled validation videos")
    p.add_argument("--data-dir", required=True, type=Path, help="their DFDC-shaped folder (metadata.json)")
    p.add_argument("--output", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        matched, _ = match_labels(load_submission(a.submission), load_dataset(a.data_dir))
        y, probs = matched.label.to_numpy(), matched.pred.to_numpy()
        if len(set(y)) < 2:
            raise EvaluationError("calibration needs REAL and FAKE videos among the matched ones")
        t = fit_temperature(probs, y)
    except (EvaluationError, FileNotFoundError, ValueError) as e:
        print(f"[calibrate] error: {e}", file=sys.stderr)
        return 1
    before = compute_metrics(y, probs)["log_loss"]
    after = compute_metrics(y, apply_temperature(probs, t))["log_loss"]
    save_calibration(a.output, t, {"videos": int(len(y)), "log_loss_before": before, "log_loss_after": after,
                                   "submission": str(a.submission)})
    print(f"[calibrate] T={t:.4f} on {len(y)} videos: log loss {before:.4f} -> {after:.4f} -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
