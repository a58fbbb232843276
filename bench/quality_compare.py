#!/usr/bin/env python
"""Is recipe B better than recipe A? A paired bootstrap over the held-out videos of bench/quality.py runs.

    python bench/quality.py ... --config A.json --seed 0 --out-dir Q/a0 [--dev-dir DEV]   (and --seed 1: Q/a1)
    python bench/quality.py ... --config B.json --seed 0 --out-dir Q/b0 [--dev-dir DEV]   (and --seed 1: Q/b1)
    python bench/quality_compare.py --a Q/a0 [Q/a1 ...] --b Q/b0 [Q/b1 ...] [--n-boot 2000] [--seed 0]

Every run holds out the same videos (the split depends on the data only), so each bootstrap
replicate redraws the held-out videos once (`quality.mean_replicates`: the reals, which the
rounds share, once for all rounds; each round's fakes on their own) and scores every run on
that same draw. A side of several runs (a recipe's seeds) is the mean of its runs, and each
replicate also redraws those runs with replacement, so its interval carries the seed spread
as well as the videos' (with two or three seeds a side, a rough allowance, not an estimate
to lean on). The difference B - A of the mean AUC over methods (and of the mean balanced log
loss) then comes with a 95% percentile interval and `p_b_ahead`, the share of replicates in
which B's mean AUC is higher. Each method gets its AUCs and the interval of their
difference; the dev round (`OUT_DIR/all/dev_scores.csv`, written by --dev-dir) gets the
overall keys when every run has one (else `dev_skipped`). Only the methods every run scored
are compared (the rest under `skipped`).

It reads each run's own `*/scores.csv`, the scores the run was trained and scored with, not
the `*_reuse_*` files of a later `--reuse`. Runs made with --calibrate compare as they were
scored (a temperature does not change an AUC, but it moves the log loss).

Prints one JSON object: `runs`, `n_boot`, `methods` (per method: `auc` [A, B], `diff`,
`diff_ci95`), `mean_auc` [A, B], `runs_mean_auc` (each run's), `mean_auc_ci95` [[A], [B]],
`diff`, `diff_ci95`, `p_b_ahead`, `mean_balanced_log_loss` [A, B] and
`runs_mean_balanced_log_loss`, `bll_diff` and `bll_diff_ci95` (negative: B's log loss is
lower), `skipped`, and `dev` (auc, runs_auc, auc_ci95, diff, diff_ci95, p_b_ahead,
balanced_log_loss, bll_diff, bll_diff_ci95).
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

from quality import N_BOOT, _round, ci95, mean_replicates, metrics  # noqa: E402
from quality_ensemble import check_same_videos, round_scores  # noqa: E402


def paired(a_reps: np.ndarray, b_reps: np.ndarray) -> dict:
    d = b_reps - a_reps
    d = d[np.isfinite(d)]  # a replicate that left a set without a class
    return {"diff_ci95": ci95(d),
            "p_b_ahead": _round(float((d > 0).mean() + 0.5 * (d == 0).mean())) if len(d) else None}


def side_replicates(run_reps: np.ndarray, picks: np.ndarray | None) -> np.ndarray:
    """One side's replicates (n_boot,) from its runs' (runs, n_boot): with several runs, each
    replicate averages a redraw of the runs with replacement (`picks`, (n_boot, runs)), so
    the side's interval carries the spread between its seeds as well as the videos'."""
    if picks is None:
        return run_reps[0]
    return run_reps[picks, np.arange(run_reps.shape[1])[:, None]].mean(axis=1)


def compare_sets(sets: dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]], n_boot: int, seed: int) -> dict:
    """sets: method -> (A's runs' scores, B's runs' scores), all on the same videos. A side's
    metric is the mean over its runs (seeds) of each run's metric; per method and over
    methods, with the videos redrawn as `quality.mean_replicates` does and, on a side of
    several runs, the runs too."""
    for m, (a, b) in sets.items():
        check_same_videos(a + b, f"{m}: ")
    two = {m: ab for m, ab in sets.items() if ab[0][0].label.nunique() == 2}
    if not two:
        raise ValueError("no held-out set has both classes")
    na, nb = (len(next(iter(two.values()))[i]) for i in (0, 1))
    if any((len(a), len(b)) != (na, nb) for a, b in two.values()):
        raise ValueError("every method needs the same runs on each side")
    auc, bll, per = mean_replicates({m: a + b for m, (a, b) in two.items()}, n_boot, seed, per_set=True)
    rng = np.random.default_rng(seed + 1)
    picks = [rng.integers(k, size=(n_boot, k)) if k > 1 else None for k in (na, nb)]
    side = lambda reps, i: side_replicates(reps[:na] if i == 0 else reps[na:], picks[i])  # noqa: E731
    # every run's metrics of every set, once: scores[m][side][run] = metrics()
    scores = {m: [[metrics(f.label, f.pred) for f in runs] for runs in ab] for m, ab in two.items()}
    mean = lambda values: float(np.mean(values))  # noqa: E731
    methods = {}
    for m in two:
        ma, mb = (mean([r["auc"] for r in scores[m][i]]) for i in (0, 1))
        methods[m] = {"auc": [_round(ma), _round(mb)], "diff": _round(mb - ma),
                      "diff_ci95": paired(side(per[m][0], 0), side(per[m][0], 1))["diff_ci95"]}
    runs_auc, runs_bll = ([[mean([scores[m][i][j][key] for m in two]) for j in range(n)]
                           for i, n in ((0, na), (1, nb))] for key in ("auc", "balanced_log_loss"))
    a_auc, b_auc = (mean(r) for r in runs_auc)
    a_bll, b_bll = (mean(r) for r in runs_bll)
    out = {"methods": methods, "mean_auc": [_round(a_auc), _round(b_auc)],
           "runs_mean_auc": [[_round(x) for x in r] for r in runs_auc],
           "mean_auc_ci95": [ci95(side(auc, 0)), ci95(side(auc, 1))], "diff": _round(b_auc - a_auc)}
    out.update(paired(side(auc, 0), side(auc, 1)))
    out.update({"mean_balanced_log_loss": [_round(a_bll), _round(b_bll)],
                "runs_mean_balanced_log_loss": [[_round(x) for x in r] for r in runs_bll],
                "bll_diff": _round(b_bll - a_bll), "bll_diff_ci95": ci95(side(bll, 1) - side(bll, 0))})
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
    missing = [str(d) for d, p in dev.items() if not p.exists()]
    if missing and len(missing) < len(dev):
        out["dev_skipped"] = f"no all/dev_scores.csv in {missing}"
    if not missing:
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
