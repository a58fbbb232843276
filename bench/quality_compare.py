#!/usr/bin/env python
"""Is run B better than run A? A paired bootstrap over the held-out videos of two bench/quality.py runs.

    python bench/quality.py ... --config A.json --out-dir Q/a [--dev-dir DEV]
    python bench/quality.py ... --config B.json --out-dir Q/b [--dev-dir DEV]
    python bench/quality_compare.py Q/a Q/b [--n-boot 2000] [--seed 0]

Both runs hold out the same videos (the split depends on the data only), so each bootstrap
replicate redraws every held-out set's fakes and reals once, with replacement, and scores
both runs on that same draw (`quality.set_replicates`). The difference B - A of the mean
AUC over methods (and of the mean balanced log loss) then comes with a 95% percentile
interval and the share of replicates in which B is ahead. A single method's set and, where
both runs have one, the dev round (`OUT_DIR/all/dev_scores.csv`, written by --dev-dir) get
the same. Only the methods both runs scored are compared (the rest under `skipped`).

What it measures: how far the comparison could move with other videos of the same kinds.
It cannot see the training seed's spread (one run per recipe), which on train-videos was as
large as the differences between recipes (README): an interval that excludes 0 says the two
*models* differ on these kinds of videos, not that the *recipes* do. Runs made with
--calibrate compare as they were scored (a temperature does not change an AUC).

Prints one JSON object: `runs`, `n_boot`, `methods` (per method: `auc` [A, B], `diff`,
`diff_ci95`), `mean_auc` [A, B], `mean_auc_ci95` [[A], [B]], `diff`, `diff_ci95`,
`p_b_ahead`, `mean_balanced_log_loss` [A, B] with `bll_diff` and `bll_diff_ci95`
(negative: B's log loss is lower), `skipped`, and with both dev rounds `dev` (the same keys).
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

from quality import N_BOOT, _round, ci95, mean_replicates, metrics, set_replicates  # noqa: E402
from quality_ensemble import round_scores  # noqa: E402


def same_videos(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    """Two runs' scores of one held-out set must cover the same videos with the same labels."""
    a, b = a.set_index("video"), b.set_index("video")
    if set(a.index) != set(b.index):
        raise ValueError(f"{what}: the runs scored other videos ({len(set(a.index) ^ set(b.index))} differ): "
                         "not the same split")
    if not (a.label.sort_index() == b.label.loc[a.index].sort_index()).all():
        raise ValueError(f"{what}: the runs label some videos differently")


def paired(a_reps: np.ndarray, b_reps: np.ndarray) -> dict:
    d = b_reps - a_reps
    return {"diff_ci95": ci95(d), "p_b_ahead": _round(float((d > 0).mean() + 0.5 * (d == 0).mean()))}


def _mean_metric(frames: list[pd.DataFrame], key: str) -> float:
    return float(np.mean([metrics(f.label, f.pred)[key] for f in frames]))


def compare_sets(sets: dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]], n_boot: int, seed: int) -> dict:
    """sets: method -> (A's runs' scores, B's runs' scores), all on the same videos. A side's
    metric is the mean over its runs (seeds) of each run's metric; per method and over methods."""
    for m, (a, b) in sets.items():
        for f in a[1:] + b:
            same_videos(a[0], f, m)
    two = {m: ab for m, ab in sets.items() if ab[0][0].label.nunique() == 2}
    if not two:
        raise ValueError("no held-out set has both classes")
    na = len(next(iter(two.values()))[0])
    methods = {}
    for k, m in enumerate(sorted(sets)):
        if m not in two:
            continue
        a, b = two[m]
        ref = a[0].set_index("video").sort_index()
        auc, _ = set_replicates(ref.label, [f.set_index("video").pred.loc[ref.index] for f in a + b], n_boot, seed + k)
        ma, mb = _mean_metric(a, "auc"), _mean_metric(b, "auc")
        methods[m] = {"auc": [_round(ma), _round(mb)], "diff": _round(mb - ma),
                      "diff_ci95": paired(auc[:na].mean(0), auc[na:].mean(0))["diff_ci95"]}
    auc, bll = mean_replicates({m: a + b for m, (a, b) in sets.items()}, n_boot, seed)
    side = lambda i, key: [float(np.mean([metrics(f.label, f.pred)[key] for f in (ab[i][j] for ab in two.values())]))  # noqa: E731
                           for j in range(len(next(iter(two.values()))[i]))]
    runs_auc = [side(0, "auc"), side(1, "auc")]
    runs_bll = [side(0, "balanced_log_loss"), side(1, "balanced_log_loss")]
    a_auc, b_auc = (float(np.mean(r)) for r in runs_auc)
    a_bll, b_bll = (float(np.mean(r)) for r in runs_bll)
    out = {"methods": methods, "mean_auc": [_round(a_auc), _round(b_auc)],
           "runs_mean_auc": [[_round(x) for x in r] for r in runs_auc],
           "mean_auc_ci95": [ci95(auc[:na].mean(0)), ci95(auc[na:].mean(0))], "diff": _round(b_auc - a_auc)}
    out.update(paired(auc[:na].mean(0), auc[na:].mean(0)))
    out.update({"mean_balanced_log_loss": [_round(a_bll), _round(b_bll)], "bll_diff": _round(b_bll - a_bll),
                "bll_diff_ci95": ci95(bll[na:].mean(0) - bll[:na].mean(0))})
    return out


def compare_runs(runs_a: list[Path], runs_b: list[Path], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Side A's runs against side B's (one run a side, or several seeds of each recipe)."""
    rounds = {}
    for d in list(runs_a) + list(runs_b):
        rounds[d] = round_scores(d)
        if not rounds[d]:
            raise FileNotFoundError(f"no */scores.csv under {d}: is it a bench/quality.py --out-dir?")
    common = sorted(set.intersection(*(set(r) for r in rounds.values())))
    if not common:
        raise ValueError("the runs share no held-out method")
    out = {"runs": [[str(d) for d in runs_a], [str(d) for d in runs_b]], "n_boot": n_boot}
    out.update(compare_sets({m: ([rounds[d][m] for d in runs_a], [rounds[d][m] for d in runs_b]) for m in common},
                            n_boot, seed))
    out["skipped"] = sorted(set.union(*(set(r) for r in rounds.values())) - set(common))
    dev = {d: Path(d) / "all" / "dev_scores.csv" for d in list(runs_a) + list(runs_b)}
    if all(p.exists() for p in dev.values()):
        sa, sb = [pd.read_csv(dev[d]) for d in runs_a], [pd.read_csv(dev[d]) for d in runs_b]
        if sa[0].label.nunique() == 2:
            c = compare_sets({"dev": (sa, sb)}, n_boot, seed)
            out["dev"] = {"auc": c["mean_auc"], "runs_auc": c["runs_mean_auc"], "auc_ci95": c["mean_auc_ci95"],
                          "diff": c["diff"], "diff_ci95": c["diff_ci95"], "p_b_ahead": c["p_b_ahead"],
                          "balanced_log_loss": c["mean_balanced_log_loss"], "bll_diff": c["bll_diff"],
                          "bll_diff_ci95": c["bll_diff_ci95"]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, nargs="+", required=True,
                   help="bench/quality.py --out-dir(s) of the baseline (several: its seeds)")
    p.add_argument("--b", type=Path, nargs="+", required=True,
                   help="bench/quality.py --out-dir(s) of the candidate (several: its seeds)")
    p.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap replicates [{N_BOOT}]")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.n_boot < 100:
        p.error(f"--n-boot must be at least 100 for a 95% interval, got {a.n_boot}")
    try:
        out = compare_runs(a.a, a.b, a.n_boot, a.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
