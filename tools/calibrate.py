#!/usr/bin/env python
"""Fit a temperature on validation predictions, for `6_predict.py --calibration`.

    python tools/calibrate.py --submission VAL.csv --data-dir VAL_DATA_DIR --output weights/calibration.json \
        [--balanced] [--min-temperature 1]

Log loss is the competition metric and punishes over-confidence hard; one scalar T
(p' = sigmoid(logit(p) / T)), fitted on held-out videos, fixes most of it. `--balanced`
fits the balanced log loss (the mean of the REAL and the FAKE videos' losses) instead;
`--min-temperature 1` lets the fit soften the scores but not sharpen them.

The validation videos of a training fold, ready for 6_predict (run_all.sh does this with
the ensemble it trained on that fold, then calls the first form):

    python tools/calibrate.py --link-fold LINK_DIR --work-dir WORK --data-dir DATA_DIR --fold 0

writes LINK_DIR/<video id>.<ext> links to the fold's videos and a metadata.json per
folder with their labels (no copy).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.calibration import apply_temperature, fit_temperature, save_calibration  # noqa: E402
from preprocessing.dataset import load_dataset  # noqa: E402
from tools.evaluate import EvaluationError, compute_metrics, load_submission, match_labels  # noqa: E402


def link_fold(link_dir: Path, work_dir: Path, data_dir: Path, fold: int) -> dict[str, int]:
    """LINK_DIR mirrors the fold's videos (links) with their labels; returns {REAL, FAKE} counts."""
    import pandas as pd

    folds_csv = Path(work_dir) / "folds.csv"
    if not folds_csv.is_file():
        raise FileNotFoundError(f"{folds_csv} does not exist (run 4_generate_folds.py)")
    df = pd.read_csv(folds_csv, usecols=["video", "fold"])
    wanted = set(df.video[df.fold == fold])
    if not wanted:
        raise ValueError(f"fold {fold} has no videos in {folds_csv}")
    if link_dir.exists():
        shutil.rmtree(link_dir)
    meta: dict[Path, dict] = {}
    counts = {"REAL": 0, "FAKE": 0}
    for v in load_dataset(data_dir).videos:
        if v.id not in wanted:
            continue
        dst = link_dir / (v.id + v.path.suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(v.path.resolve())
        meta.setdefault(dst.parent, {})[dst.name] = {"label": v.label}
        counts[v.label] += 1
    for folder, entries in meta.items():
        (folder / "metadata.json").write_text(json.dumps(entries, indent=1))
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submission", type=Path, help="predictions on labelled validation videos")
    p.add_argument("--data-dir", required=True, type=Path, help="their DFDC-shaped folder (metadata.json)")
    p.add_argument("--output", type=Path)
    p.add_argument("--balanced", action="store_true", help="fit the balanced log loss (REAL and FAKE weigh 1/2 each)")
    p.add_argument("--min-temperature", type=float, default=None, metavar="T0",
                   help="fit T >= T0, in [0.05, 20] [default: no bound, the free fit in [0.05, 20]]; 1 softens "
                        "over-confident scores but never sharpens them (run_all's CALIBRATE_MIN_T default: a "
                        "temperature that sharpened on seen methods hurt unseen ones, see the README)")
    p.add_argument("--link-fold", type=Path, default=None, metavar="LINK_DIR",
                   help="instead: link the videos of --fold (folds.csv in --work-dir) into LINK_DIR")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--fold", type=int, default=0)
    a = p.parse_args(argv)
    if a.link_fold is not None:
        if a.work_dir is None:
            p.error("--link-fold needs --work-dir")
        try:
            counts = link_fold(a.link_fold, a.work_dir, a.data_dir, a.fold)
        except (FileNotFoundError, ValueError) as e:
            print(f"[calibrate] error: {e}", file=sys.stderr)
            return 1
        print(f"[calibrate] fold {a.fold}: {counts['REAL']} REAL and {counts['FAKE']} FAKE videos linked "
              f"in {a.link_fold}", file=sys.stderr)
        return 0
    if a.submission is None or a.output is None:
        p.error("--submission and --output are required (or --link-fold)")
    try:
        matched, _ = match_labels(load_submission(a.submission), load_dataset(a.data_dir))
        y, probs = matched.label.to_numpy(), matched.pred.to_numpy()
        if len(set(y)) < 2:
            raise EvaluationError("calibration needs REAL and FAKE videos among the matched ones")
        t = fit_temperature(probs, y, balanced=a.balanced, min_temperature=a.min_temperature)
    except (EvaluationError, FileNotFoundError, ValueError) as e:
        print(f"[calibrate] error: {e}", file=sys.stderr)
        return 1
    before, after = compute_metrics(y, probs), compute_metrics(y, apply_temperature(probs, t))
    key = "balanced_log_loss" if a.balanced else "log_loss"
    save_calibration(a.output, t, {"videos": int(len(y)), "fit": key, "min_temperature": a.min_temperature,
                                   "log_loss_before": before["log_loss"], "log_loss_after": after["log_loss"],
                                   "balanced_log_loss_before": before.get("balanced_log_loss"),
                                   "balanced_log_loss_after": after.get("balanced_log_loss"),
                                   "submission": str(a.submission)})
    bound = " (at the --min-temperature bound)" if a.min_temperature == t else ""
    print(f"[calibrate] T={t:.4f}{bound} on {len(y)} videos: {key} {before[key]:.4f} -> {after[key]:.4f} "
          f"-> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
