#!/usr/bin/env python
"""Leave-one-method-out quality of an ENSEMBLE, from bench/quality.py runs of its members.

    python bench/quality.py ... --config configs/lite0_cpu.json --out-dir Q/lite0 [--dev-dir DEV]
    python bench/quality.py ... --config configs/lite0_seq3d_cpu.json --out-dir Q/seq3d [--dev-dir DEV]
    python bench/quality_ensemble.py Q/lite0 Q/seq3d [--weights 1 1] [--dev-dir DEV]

Each run leaves, per held-out method, `OUT_DIR/<method>/scores.csv` (one row per held-out
video: label, pred, face_size). The runs hold out the same videos (the split depends on
the data only), so the ensemble's score of a video is what 6_predict's ensemble computes
from the same models with a per-model strategy (confident, mean): the (weighted) mean of
the members' video probabilities (`inference.aggregation.ensemble`). The 'ntech' strategy
pools every model's faces together and cannot be rebuilt from video scores: refused. Runs
made with --calibrate are refused too (each member's scores carry its own temperature;
run_all fits one on the ensemble). Methods missing from a run are left out and listed
under `skipped`.

With --dev-dir, the members' models trained on all of DATA_DIR (`OUT_DIR/all/weights/
all_fold0_last.pt`, what quality.py scored) score that folder end to end together with
6_predict's pipeline, with --strategy (the members' runs should have used the same).

Prints one JSON object with quality.py's keys: `methods` (auc, log_loss,
balanced_log_loss, counts, mean scores, face_size_auc, score_size_spearman), `mean_auc`,
`mean_auc_ci95`, `mean_balanced_log_loss`, and with --dev-dir `dev`, `dev_auc` and
`dev_auc_ci95`. With one run it re-reads that run's scores (the intervals of a run made
before quality.py printed them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import _round, auc_replicates, ci95, dev_scores, mean_auc_replicates, metrics, size_shortcut  # noqa: E402


def round_scores(run_dir: Path) -> dict[str, pd.DataFrame]:
    """{method dir: its scores.csv} of one quality.py run (the dev round 'all' has none)."""
    return {p.parent.name: pd.read_csv(p) for p in sorted(Path(run_dir).glob("*/scores.csv"))}


def check_same_videos(frames: list[pd.DataFrame], what: str = "") -> None:
    """Runs' scores of one held-out set must cover the same videos with the same labels."""
    base = frames[0].set_index("video").label
    for k, f in enumerate(frames[1:], 1):
        f = f.set_index("video").label
        if set(f.index) != set(base.index):
            raise ValueError(f"{what}run {k} scored other videos than run 0 "
                             f"({len(set(f.index) ^ set(base.index))} differ): not the same split")
        if not (f.loc[base.index] == base).all():
            raise ValueError(f"{what}run {k} labels some videos differently from run 0")


def combine(frames: list[pd.DataFrame], weights: list[float]) -> pd.DataFrame:
    """One method's ensemble scores: the weighted mean of the members' `pred` per video.
    The members must hold out the same videos with the same labels."""
    check_same_videos(frames)
    base = frames[0].set_index("video").sort_index()
    preds = [f.set_index("video").pred.loc[base.index].to_numpy(dtype=np.float64) for f in frames]
    w = np.asarray(weights, dtype=np.float64)
    out = base[["label"]].copy()
    out["pred"] = np.average(np.stack(preds), axis=0, weights=w)
    out["face_size"] = base["face_size"] if "face_size" in base else np.nan
    return out.reset_index()


def ensemble_report(run_dirs: list[Path], weights: list[float] | None = None) -> dict:
    weights = [1.0] * len(run_dirs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(run_dirs) or any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"--weights: one non-negative number per run, not all 0; got {weights}")
    runs = [round_scores(d) for d in run_dirs]
    for d, r in zip(run_dirs, runs):
        if not r:
            raise FileNotFoundError(f"no */scores.csv under {d}: is it a bench/quality.py --out-dir?")
        calibrated = sorted(m for m in r if (Path(d) / m / "cal").is_dir())
        if calibrated:
            raise ValueError(f"{d} was run with --calibrate ({calibrated[0]}/cal): its scores carry the "
                             f"member's own temperature; ensemble runs made without --calibrate")
    common = sorted(set.intersection(*(set(r) for r in runs)))
    skipped = sorted(set.union(*(set(r) for r in runs)) - set(common))
    methods, combined = {}, {}
    for m in common:
        scores = combined[m] = combine([r[m] for r in runs], weights)
        methods[m] = {k: _round(v) for k, v in metrics(scores.label, scores.pred).items()}
        methods[m].update({k: _round(v) for k, v in size_shortcut(scores).items()})
    finite = lambda k: [v[k] for v in methods.values() if v.get(k) is not None]  # noqa: E731
    out = {"runs": [str(d) for d in run_dirs], "weights": weights, "methods": methods, "skipped": skipped,
           "mean_auc": _round(float(np.mean(finite("auc")))) if finite("auc") else None,
           "mean_balanced_log_loss": _round(float(np.mean(finite("balanced_log_loss")))) if methods else None}
    if finite("auc"):
        out["mean_auc_ci95"] = ci95(mean_auc_replicates({m: [s] for m, s in combined.items()})[0])
    return out


def dev_checkpoints(run_dirs: list[Path]) -> list[Path]:
    ckpts = []
    for d in run_dirs:
        if (Path(d) / "all" / "calibration.json").exists():
            raise ValueError(f"{d} was run with --calibrate: its dev model has its own temperature; "
                             f"ensemble runs made without --calibrate")
        ckpt = Path(d) / "all" / "weights" / "all_fold0_last.pt"
        if not ckpt.exists():
            raise FileNotFoundError(f"{ckpt} is missing: run bench/quality.py with --dev-dir to train it")
        ckpts.append(ckpt)
    return ckpts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="bench/quality.py --out-dir folders, one per member")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one per run (default: equal)")
    p.add_argument("--dev-dir", type=Path, default=None, help="also score this folder end to end with the "
                   "members' all-data models")
    p.add_argument("--strategy", default="confident", choices=["confident", "mean"],
                   help="dev-videos' pooling per model (the runs' --strategy; 'ntech' cannot be ensembled here)")
    a = p.parse_args()
    try:
        out = ensemble_report(a.runs, a.weights)
        if a.dev_dir is not None:
            dev, scores = dev_scores(a.dev_dir, dev_checkpoints(a.runs), a.strategy, weights=a.weights)
            out["dev"], out["dev_auc"] = dev, dev["auc"]
            if scores.label.nunique() == 2:
                out["dev_auc_ci95"] = ci95(auc_replicates(scores.label, [scores.pred])[0])
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
