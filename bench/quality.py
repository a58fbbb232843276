#!/usr/bin/env python
"""Generalisation to unseen manipulation methods: leave-one-method-out cross-validation.

    python bench/quality.py --data-dir ../shared/data/train-videos --work-dir WORK \\
        [--config configs/lite0_cpu.json] [--epochs N] [--methods A B] [--dev-dir ../shared/data/dev-videos]

WORK holds steps 0-4 of DATA_DIR (`run_all.sh DATA_DIR` leaves them). Every FAKE's
`method` in metadata.json is reduced to its family (the text before " (": SadTalker's
five variants are one method). For each family M:

- held out (scored): M's fakes, every REAL of the folders that hold them (their own
  sources: the same people, cameras and encodes), and a fixed REAL reserve -- the reals of
  step 4's fold 0 (grouped by face identity), so that every method is scored against more
  than its own folder's reals;
- trained on: every other video, except the folders of M's fakes (their reals and other
  fakes share M's people and capture) and the reserve's fold (its fakes show its people).

The model is trained with the config (5_train's code) and its LAST checkpoint is scored:
the training's own validation runs on the held-out set, so choosing the best epoch there
would peek. A video's score comes from its step-1 crops (the crops 6_predict cuts, see
tests/test_crop_parity.py), pooled with 6_predict's strategy (`--strategy`).

With --dev-dir, a model trained on all of DATA_DIR scores that folder end to end with
6_predict's pipeline (decode, detect, crop, score) against its metadata labels (per video:
OUT_DIR/all/dev_scores.csv). bench/quality_ensemble.py combines the runs of several configs
into the ensemble's scores. A distillation config (`distill.teacher`) needs --teacher-run
OUT_DIR, an earlier run of its teacher's config: each round's student then learns from that
round's teacher, which never saw the held-out method.

--reuse best|last trains nothing: it scores that checkpoint of every round an earlier run with
the same --out-dir trained (with --calibrate, as the earlier run had it, its calibration fold
fits the temperature again; `best` only then, as without a calibration fold the best epoch
was chosen on the held-out set), writing `*_reuse_*` files beside the run's own and changing
none of them: it measures the choice of epoch and of calibration on the same trained models.

With --calibrate, every round does what run_all.sh does with its validation fold: the
training videos of step 4's fold CAL (1; identity-grouped, disjoint from the reserve) are
held out of training, choose the best epoch (a `keep_checkpoint` "last" config: its final one), and fit a temperature (balanced log loss,
`tools/calibrate.py --balanced`, at least --min-temperature as run_all's CALIBRATE_MIN_T) that is then applied to the held-out method's scores; the
best checkpoint is scored, and the uncalibrated `balanced_log_loss_raw` is reported beside.

Shortcut check (unless --no-reencode-check): 6_predict scores the held-out videos end to end,
and the held-out reals once more after re-encoding them the corpus's way (libx264 CRF 18):
`auc_vs_reencoded_reals` far below `auc_e2e`, or a large `reencode_shift` of the reals'
scores, means the model separates encodings, not faces.

Prints one JSON object: `methods` (per held-out family: auc, log_loss, balanced_log_loss,
videos, real, fake, the mean score of its fakes and of the held-out reals, reencode_check,
and the face-size shortcut check: `face_size_auc`, how well the crop side alone would
separate the held-out set, and `score_size_spearman`, how the score follows it),
`mean_auc`, `mean_balanced_log_loss` (means over methods), `dev_auc` and `dev` metrics,
the protocol, the config and the seconds taken. `mean_auc_ci95` and `dev_auc_ci95` are 95%
bootstrap intervals (N_BOOT redraws of the held-out videos, each class with replacement; the
reals, which the rounds share, once for all of them: `mean_replicates`): how far the AUC
could move with other videos of the same kinds. They do not include the training seed's
spread, which is as large (README); bench/quality_compare.py compares two recipes, paired.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESERVE_FOLD = 0
CAL_FOLD = 1  # --calibrate: the training videos of this step-4 fold choose the epoch and fit T
LINKED = ("crops", "boxes", "landmarks", "diffs", "face_descriptors")


def method_family(method: str | None) -> str:
    """'SadTalker (one image + audio, GFPGAN)' -> 'SadTalker'; a REAL's 'none' stays."""
    return re.sub(r"\s*\(.*\)\s*$", "", str(method or "unknown")).strip() or "unknown"


def video_methods(data_dir: Path, videos=None) -> dict[str, str]:
    """video id -> method family, from the metadata.json "method" of every video under
    data_dir (`videos`: its `load_dataset(data_dir).videos`, when the caller has them)."""
    from preprocessing.dataset import load_dataset

    videos = load_dataset(data_dir).videos if videos is None else videos
    return {v.id: method_family(v.method) if v.is_fake else "REAL" for v in videos}


def folder_of(video: str) -> str:
    return video.split("/", 1)[0] if "/" in video else ""


def lomo_splits(df: pd.DataFrame, methods: dict[str, str], reserve_fold: int = RESERVE_FOLD) -> dict:
    """{family: (test videos, train videos)} for every family with a FAKE (see module doc)."""
    videos = df.drop_duplicates("video").set_index("video")
    fam = videos.index.map(lambda v: methods.get(v, "unknown"))
    folders = videos.index.map(folder_of)
    reserve_reals = set(videos.index[(videos.label == 0) & (videos.fold == reserve_fold)])
    reserve_fold_videos = set(videos.index[videos.fold == reserve_fold])
    out = {}
    for m in sorted(set(fam[videos.label == 1])):
        fakes = set(videos.index[(fam == m) & (videos.label == 1)])
        held_folders = {folder_of(v) for v in fakes}
        in_folders = set(videos.index[folders.isin(held_folders)])
        test = fakes | {v for v in in_folders if videos.label[v] == 0} | reserve_reals
        train = set(videos.index) - in_folders - reserve_fold_videos
        out[m] = (sorted(test), sorted(train))
    return out


def round_dir(work: Path, dest: Path, df: pd.DataFrame, test: list[str], train: list[str]) -> Path:
    """A work dir of links to WORK's artifacts and a folds.csv: fold 0 = test, 1 = train."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link, target = dest / name, (work / name).resolve()
        if target.exists() and not link.exists():
            link.symlink_to(target)
    sub = df[df.video.isin(set(test) | set(train))].copy()
    sub["fold"] = np.where(sub.video.isin(set(test)), 0, 1)
    sub.to_csv(dest / "folds.csv", index=False)
    return dest


def with_teacher(cfg: dict, teacher_run: Path | None, slug: str) -> dict:
    """`cfg` with the round's own distillation teacher: the checkpoint the teacher's
    bench/quality.py run trained and scored in the same round (`slug`: a method, or 'all')."""
    if teacher_run is None:
        return cfg
    if not cfg.get("distill", {}).get("teacher"):
        raise ValueError(f"--teacher-run is for a distillation config; {cfg.get('name')} has no distill.teacher")
    name = "all" if slug == "all" else f"lomo_{slug}"
    weights = teacher_run / slug / "weights"
    calibrated = (teacher_run / slug / "cal").is_dir() or (teacher_run / slug / "calibration.json").exists()
    ckpt = weights / f"{name}_fold0_{'best' if calibrated else 'last'}.pt"  # the checkpoint that run scored
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt} is missing: run bench/quality.py with the teacher's config and "
                                f"--out-dir {teacher_run} over the same methods first")
    return dict(cfg, distill=dict(cfg["distill"], teacher=str(ckpt.resolve())))


def reused(rd: Path, name: str, which: str) -> Path:
    """--reuse: the `which` ('best' or 'last') checkpoint an earlier run trained in round dir `rd`."""
    ckpt = rd / "weights" / f"{name}_fold0_{which}.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"--reuse {which}: {ckpt} is missing; run bench/quality.py with the same "
                                "--out-dir (and --calibrate, if given now) without --reuse first")
    return ckpt


def earlier_round(rd: Path, calibrated: bool, marker: str) -> Path:
    """--reuse: round dir `rd` as an earlier run left it, made the way this run asks: with a
    calibration fold (`marker`, its cal/ dir or calibration.json, present) or without."""
    if not (rd / "folds.csv").is_file():
        raise FileNotFoundError(f"--reuse: {rd} is not a round of an earlier run (no folds.csv)")
    if (rd / marker).exists() != calibrated:
        made, asked = ("with", "without") if (rd / marker).exists() else ("without", "with")
        raise ValueError(f"--reuse: {rd} was trained {made} a calibration fold, and this run asks {asked} one: "
                         f"give --calibrate as the earlier run did")
    return rd


def dev_scores(dev_dir: Path, checkpoints: list[Path], strategy: str, **predict_kw) -> tuple[dict, pd.DataFrame]:
    """(metrics, per-video label/pred/video) of 6_predict end to end on a labelled folder
    with these checkpoints as one ensemble (`predict_kw`: calibration, weights)."""
    from inference.predictor import predict_dir
    from preprocessing.dataset import load_dataset

    pred = predict_dir(dev_dir, checkpoints, strategy=strategy, progress=False, **predict_kw)
    labels = {v.path.resolve(): int(v.is_fake) for v in load_dataset(dev_dir).videos}
    scores = pd.DataFrame([(labels[(dev_dir / name).resolve()], p, name) for name, p in pred.rows
                           if (dev_dir / name).resolve() in labels], columns=["label", "pred", "video"])
    dev = {k: _round(v) for k, v in metrics(scores.label, scores.pred).items()}
    dev["failed"] = len(pred.errors)
    return dev, scores


def calibration_split(df: pd.DataFrame, train: list[str], cal_fold: int = CAL_FOLD) -> tuple[list[str], list[str]]:
    """(calibration videos, the rest): the training videos of step 4's fold `cal_fold`
    (whole identities), when it holds both classes; else ([], train)."""
    fold = df.drop_duplicates("video").set_index("video")
    cal = [v for v in train if fold.fold[v] == cal_fold]
    if len({int(fold.label[v]) for v in cal}) < 2:
        return [], list(train)
    return cal, [v for v in train if fold.fold[v] != cal_fold]


def fit_balanced_temperature(cal_scores: pd.DataFrame, min_temperature: float | None = None) -> float:
    """run_all's temperature (`tools/calibrate.py --balanced --min-temperature`) fitted on video scores."""
    from inference.calibration import fit_temperature

    return fit_temperature(cal_scores.pred.to_numpy(), cal_scores.label.to_numpy(), balanced=True,
                           min_temperature=min_temperature)


def calibrated(scores: pd.DataFrame, cal_scores: pd.DataFrame,
               min_temperature: float | None = None) -> tuple[pd.DataFrame, float]:
    """`scores` with the temperature fitted on `cal_scores` (balanced log loss, T >= min_temperature) applied."""
    from inference.calibration import apply_temperature

    t = fit_balanced_temperature(cal_scores, min_temperature)
    return scores.assign(pred=apply_temperature(scores.pred.to_numpy(), t)), t


def video_scores(checkpoint: Path, work: Path, strategy: str, seed: int = 0) -> pd.DataFrame:
    """Score fold 0 of `work` from its crops with a checkpoint: one row per video."""
    import torch
    from torch.utils.data import DataLoader

    from inference.aggregation import aggregate
    from training.engine import build_datasets, model_from_checkpoint

    model, cfg = model_from_checkpoint(checkpoint)
    _, val = build_datasets(cfg, work, 0, seed)
    per: dict[str, list] = {}
    with torch.inference_mode():
        for batch in DataLoader(val, batch_size=32, shuffle=False, num_workers=0):
            probs = torch.sigmoid(model(batch["image"]).float()).reshape(len(batch["video"]), -1).numpy()
            for v, y, p in zip(batch["video"], batch["label"].tolist(), probs):
                per.setdefault(v, [y, []])[1].extend(p.tolist())
    sizes = face_sizes(work, list(per))
    return pd.DataFrame([{"video": v, "label": int(round(y)), "pred": float(aggregate(np.array(p), strategy)),
                          "face_size": sizes.get(v, float("nan"))} for v, (y, p) in per.items()])


def face_sizes(work: Path, videos: list[str]) -> dict[str, float]:
    """video -> the median side (px, in the source video) of its step-1 crops, from the
    PNG headers: how big the face was, the resolution a shortcut could key on."""
    from PIL import Image

    from training.datasets import load_folds

    df = load_folds(work)
    df = df[df.video.isin(set(videos))]
    out = {}
    for v, g in df.groupby("video"):
        sides = []
        for f in g.file.iloc[:: max(1, len(g) // 8)]:
            with Image.open(work / f) as im:
                sides.append(max(im.size))
        out[v] = float(np.median(sides))
    return out


def size_shortcut(scores: pd.DataFrame) -> dict:
    """How far face size alone separates this held-out set (AUC of the crop side as a
    FAKE score: 0.5 none, below 0.5 the fakes' faces are smaller) and how the model's
    score follows it (Spearman over the videos)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    s = scores.dropna(subset=["face_size"])
    out = {"face_size_auc": float(roc_auc_score(s.label, s.face_size)) if s.label.nunique() == 2 else None}
    out["score_size_spearman"] = float(spearmanr(s.pred, s.face_size)[0]) if len(s) > 2 else None
    return out


def reencode(src: Path, dst: Path) -> Path:
    """The corpus's own encode (train-videos/README: libx264 -crf 18 -preset medium,
    yuv420p), applied once more; cached."""
    import subprocess

    from preprocessing.video import ffmpeg_exe

    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.stem + ".tmp.mp4")
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-map", "0:v:0", "-c:v", "libx264",
                        "-crf", "18", "-preset", "medium", "-pix_fmt", "yuv420p", str(tmp)], check=True)
        tmp.replace(dst)
    return dst


def reencode_check(checkpoint: Path, paths: dict[str, Path], test: list[str], labels: dict[str, int],
                   cache: Path, strategy: str) -> dict:
    """Is it the encoding? 6_predict scores the held-out fakes, the held-out reals, and the
    same reals re-encoded the corpus's way: a detector of faces gives the re-encoded reals
    the reals' scores; one of encodings moves them toward the fakes."""
    import shutil
    import tempfile

    from inference.predictor import predict_dir

    tmp = Path(tempfile.mkdtemp(prefix="quality-reencode-"))
    try:
        names = {}
        for v in test:
            kinds = [("orig", paths[v])] + ([("reenc", reencode(paths[v], cache / f"{v}.mp4"))] if labels[v] == 0 else [])
            for kind, src in kinds:
                name = f"{kind}__{v.replace('/', '__')}{src.suffix}"
                (tmp / name).symlink_to(src.resolve())
                names[name] = (kind, v)
        pred = predict_dir(tmp, [checkpoint], strategy=strategy, progress=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    score = {names[n]: p for n, p in pred.rows}
    fakes = [score[("orig", v)] for v in test if labels[v] == 1]
    reals = [score[("orig", v)] for v in test if labels[v] == 0]
    reenc = [score[("reenc", v)] for v in test if labels[v] == 0]
    vs = lambda r: metrics([1] * len(fakes) + [0] * len(r), fakes + r)["auc"]  # noqa: E731
    return {"auc_e2e": vs(reals), "auc_vs_reencoded_reals": vs(reenc),
            "real_score": float(np.mean(reals)), "reencoded_real_score": float(np.mean(reenc)),
            "reencode_shift": float(np.mean(np.array(reenc) - np.array(reals))), "failed": len(pred.errors)}


def metrics(y, p) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    from training.engine import balanced_log_loss

    y, p = np.asarray(y, int), np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    two = len(set(y.tolist())) == 2
    return {"auc": float(roc_auc_score(y, p)) if two else float("nan"),
            "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
            "balanced_log_loss": balanced_log_loss(y, p),
            "videos": int(len(y)), "real": int((y == 0).sum()), "fake": int((y == 1).sum()),
            "mean_fake_score": float(p[y == 1].mean()) if (y == 1).any() else float("nan"),
            "mean_real_score": float(p[y == 0].mean()) if (y == 0).any() else float("nan")}


N_BOOT = 2000  # bootstrap replicates of the AUCs' confidence intervals


def _counts(n: int, n_boot: int, rng) -> np.ndarray:
    """(n_boot, n) bootstrap weights: how often each of n items comes up in n draws with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _weighted(pf: np.ndarray, pr: np.ndarray, wf: np.ndarray, wr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC and balanced log loss, each (n_boot,), of the fakes' scores `pf` against the reals'
    `pr` under replicate weights wf (n_boot, fakes) and wr (n_boot, reals); a tie counts 1/2, as
    in roc_auc_score. Memory fakes x reals + n_boot x (fakes + reals); a replicate that gives a
    class no weight is NaN."""
    pf, pr = (np.clip(np.asarray(x, np.float64), 1e-6, 1 - 1e-6) for x in (pf, pr))  # as metrics() scores
    c = (pf[:, None] > pr[None, :]) + 0.5 * (pf[:, None] == pr[None, :])
    sf, sr = wf.sum(1), wr.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((wf @ c) * wr).sum(1) / (sf * sr)
        bll = 0.5 * ((wf @ -np.log(pf)) / sf + (wr @ -np.log1p(-pr)) / sr)
    return auc, bll


def set_replicates(label, preds, n_boot: int = N_BOOT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of one held-out set's AUC and balanced log loss, each
    (len(preds), n_boot): each replicate redraws the set's fakes and its reals, each class
    with replacement (both stay present, the class counts stay as they are). Every member
    of `preds` (runs scored on the same videos) sees the same draws, so differences between
    runs are paired."""
    y = np.asarray(label, int)
    fakes, reals = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(fakes) or not len(reals):
        raise ValueError(f"an AUC needs both classes ({len(fakes)} fakes, {len(reals)} reals)")
    rng = np.random.default_rng(seed)
    wf, wr = _counts(len(fakes), n_boot, rng), _counts(len(reals), n_boot, rng)
    out = [_weighted(np.asarray(p, np.float64)[fakes], np.asarray(p, np.float64)[reals], wf, wr) for p in preds]
    return np.stack([a for a, _ in out]), np.stack([b for _, b in out])


def auc_replicates(label, preds, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """set_replicates' AUCs alone."""
    return set_replicates(label, preds, n_boot, seed)[0]


def mean_replicates(rounds: dict[str, list[pd.DataFrame]], n_boot: int = N_BOOT, seed: int = 0,
                    per_set: bool = False):
    """Replicates of the mean AUC and of the mean balanced log loss over held-out sets, each
    (runs, n_boot); with `per_set` also {method: (auc, bll)} of every set. `rounds` maps each
    method to its scores (video, label, pred) from every run, on the same videos.

    The sets share reals (every round holds out the same real reserve, and methods that share
    folders share their reals), so the reals are redrawn once for all sets: each replicate
    weighs every REAL video by how often it came up in one draw with replacement from all the
    held-out reals, in every set that holds it. The fakes (one method's own) are redrawn per
    set, so every set keeps its fakes' count. A replicate that leaves a set no real (rare: a set
    holds 20 or more) skips that set in its mean. Sets with one class only are left out, as the
    mean AUC leaves them out. Every run sees the same draws (paired)."""
    frames = {m: [f.set_index("video").sort_index() for f in rounds[m]] for m in sorted(rounds)}
    frames = {m: fs for m, fs in frames.items() if fs[0].label.nunique() == 2}
    if not frames:
        raise ValueError("no held-out set has both classes")
    rng = np.random.default_rng(seed)
    reals = sorted({v for fs in frames.values() for v in fs[0].index[fs[0].label == 0]})
    column = {v: j for j, v in enumerate(reals)}
    w_reals = _counts(len(reals), n_boot, rng)
    sets = {}
    for m, fs in frames.items():
        ref = fs[0]
        f_ids, r_ids = ref.index[ref.label == 1], ref.index[ref.label == 0]
        wf, wr = _counts(len(f_ids), n_boot, rng), w_reals[:, [column[v] for v in r_ids]]
        out = [_weighted(f.pred.loc[f_ids].to_numpy(), f.pred.loc[r_ids].to_numpy(), wf, wr) for f in fs]
        sets[m] = (np.stack([a for a, _ in out]), np.stack([b for _, b in out]))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with a set left without reals
        auc = np.nanmean(np.stack([a for a, _ in sets.values()]), axis=0)
        bll = np.nanmean(np.stack([b for _, b in sets.values()]), axis=0)
    return (auc, bll, sets) if per_set else (auc, bll)


def mean_auc_replicates(rounds: dict[str, list[pd.DataFrame]], n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """mean_replicates' mean AUCs alone."""
    return mean_replicates(rounds, n_boot, seed)[0]


def ci95(replicates) -> list:
    """The 2.5th and 97.5th percentiles of bootstrap replicates (the percentile interval), over
    the finite ones (a replicate that left a set without a class is NaN); [None, None] if none is."""
    r = np.asarray(replicates, float)
    r = r[np.isfinite(r)]
    return [_round(float(q)) for q in np.percentile(r, [2.5, 97.5])] if len(r) else [None, None]


def _round(x):
    return round(x, 4) if isinstance(x, float) and math.isfinite(x) else (None if isinstance(x, float) else x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="the corpus (metadata.json with `method`)")
    p.add_argument("--work-dir", type=Path, required=True, help="its steps 0-4")
    p.add_argument("--config", type=Path, default=Path("configs/lite0_cpu.json"))
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--methods", nargs="*", default=None, help="only these held-out families")
    p.add_argument("--strategy", default="confident", choices=["confident", "ntech", "mean"])
    p.add_argument("--dev-dir", type=Path, default=None, help="also train on all of DATA_DIR, score this folder")
    p.add_argument("--out-dir", type=Path, default=None, help="round work dirs and checkpoints "
                   "(default WORK/quality)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-run", type=Path, default=None,
                   help="a distillation config's teacher, per round: the checkpoint that round of this earlier "
                        "bench/quality.py --out-dir scored (a teacher trained on everything would have seen the "
                        "held-out method)")
    p.add_argument("--calibrate", action="store_true",
                   help=f"hold step 4's fold {CAL_FOLD} of the training videos out: best epoch + temperature (run_all's way)")
    p.add_argument("--min-temperature", type=float, default=1.0,
                   help="--calibrate: the temperature's lower bound, as run_all's CALIBRATE_MIN_T [1: soften only; "
                        "0.05: the free fit, run_all's before 2026-12-05]")
    p.add_argument("--reuse", choices=["best", "last"], default=None,
                   help="train nothing: score this checkpoint of every round that an earlier run with the same "
                        "--out-dir (and --calibrate, if given) trained; measures the choice of epoch without "
                        "retraining")
    p.add_argument("--no-reencode-check", dest="reencode_check", action="store_false",
                   help="skip scoring the held-out reals re-encoded the corpus's way (6_predict end to end)")
    a = p.parse_args()
    from inference.calibration import T_BOUNDS

    if not T_BOUNDS[0] <= a.min_temperature <= T_BOUNDS[1]:
        p.error(f"--min-temperature must lie in [{T_BOUNDS[0]}, {T_BOUNDS[1]}] ({T_BOUNDS[0]}: the free fit), "
                f"got {a.min_temperature}")
    if a.reuse == "best" and not a.calibrate:
        p.error("--reuse best needs --calibrate: without it the best epoch was chosen on the held-out set itself")

    from preprocessing.dataset import load_dataset
    from training.config import load_config
    from training.datasets import load_folds
    from training.engine import train

    t0 = time.time()
    cfg = load_config(a.config)
    df = load_folds(a.work_dir)
    dataset = load_dataset(a.data_dir).videos
    paths = {v.id: v.path for v in dataset}
    labels = {v.id: int(v.is_fake) for v in dataset}
    methods = video_methods(a.data_dir, dataset)
    out_dir = a.out_dir or a.work_dir / "quality"
    splits = lomo_splits(df, methods)
    if a.methods:
        unknown = set(a.methods) - set(splits)
        if unknown:
            print(f"error: unknown methods {sorted(unknown)}; known: {sorted(splits)}", file=sys.stderr)
            return 1
        splits = {m: s for m, s in splits.items() if m in a.methods}
    # a re-scoring writes its own files beside the training run's, named by what it did
    tag = (f"_reuse_{a.reuse}" + (f"_T{a.min_temperature:g}" if a.calibrate else "")) if a.reuse else ""
    per_method, held_scores = {}, {}
    for m, (test, train_videos) in splits.items():
        slug = re.sub(r"[^A-Za-z0-9]+", "_", m).strip("_")
        t1 = time.time()
        cal, fit_videos = calibration_split(df, train_videos) if a.calibrate else ([], train_videos)
        if a.reuse:  # the round as the earlier run left it; a round without a calibration fold scored its last
            rd = earlier_round(out_dir / slug, bool(cal), "cal")
            cal_dir = rd / "cal"
            ckpt = reused(rd, f"lomo_{slug}", a.reuse if cal else "last")
        else:
            rd = round_dir(a.work_dir, out_dir / slug, df, test, train_videos)
            c = with_teacher(dict(cfg, name=f"lomo_{slug}"), a.teacher_run, slug)
            if cal:  # train without the calibration videos; they choose the epoch and fit T
                cal_dir = round_dir(a.work_dir, out_dir / slug / "cal", df, cal, fit_videos)
                ckpt = train(c, cal_dir, fold=0, seed=a.seed, weights_dir=rd / "weights", epochs=a.epochs,
                             progress=False).best
            else:
                ckpt = train(c, rd, fold=0, seed=a.seed, weights_dir=rd / "weights", epochs=a.epochs,
                             progress=False).last
        if cal:
            raw = video_scores(ckpt, rd, a.strategy, a.seed)
            scores, temperature = calibrated(raw, video_scores(ckpt, cal_dir, a.strategy, a.seed), a.min_temperature)
        else:
            raw, temperature = None, None
            scores = video_scores(ckpt, rd, a.strategy, a.seed)
        scores.to_csv(rd / f"scores{tag}.csv", index=False)
        held_scores[m] = scores
        per_method[m] = {k: _round(v) for k, v in metrics(scores.label, scores.pred).items()}
        per_method[m].update({k: _round(v) for k, v in size_shortcut(scores).items()})
        if raw is not None:
            per_method[m]["balanced_log_loss_raw"] = _round(metrics(raw.label, raw.pred)["balanced_log_loss"])
            per_method[m].update(temperature=_round(temperature), calibration_videos=len(cal))
        if a.reencode_check:
            check = reencode_check(ckpt, paths, test, labels, out_dir / "reencoded", a.strategy)
            per_method[m]["reencode_check"] = {k: _round(v) for k, v in check.items()}
        per_method[m]["seconds"] = round(time.time() - t1, 1)
        print(f"[quality] {m}: {per_method[m]}", file=sys.stderr)

    finite = lambda k: [v[k] for v in per_method.values() if v.get(k) is not None]  # noqa: E731
    out = {"data_dir": str(a.data_dir), "config": str(a.config), "epochs": None if a.reuse else a.epochs, "strategy": a.strategy,
           "calibrate": a.calibrate, "reuse": a.reuse,
           "min_temperature": a.min_temperature if a.calibrate else None,
           "protocol": "leave-one-method-out; held out: the method's fakes, the reals of their folders and the "
                       f"reals of step 4's fold {RESERVE_FOLD}; trained on the rest minus those folders and that "
                       "fold; " + (f"step 4's fold {CAL_FOLD} of the rest chooses the epoch and fits a temperature; "
                                   "the best checkpoint" if a.calibrate else "the last checkpoint")
                       + (f" (--reuse: the {a.reuse} checkpoint of an earlier run)" if a.reuse else "")
                       + " scored from step-1 crops",
           "methods": per_method,
           "mean_auc": _round(float(np.mean(finite("auc")))) if finite("auc") else None,
           "mean_balanced_log_loss": _round(float(np.mean(finite("balanced_log_loss")))) if per_method else None}
    if finite("auc"):  # the held-out videos' sampling noise (not the training seed's)
        out["mean_auc_ci95"] = ci95(mean_auc_replicates({m: [s] for m, s in held_scores.items()})[0])
    if a.calibrate and finite("balanced_log_loss_raw"):
        out["mean_balanced_log_loss_raw"] = _round(float(np.mean(finite("balanced_log_loss_raw"))))

    if a.dev_dir is not None:
        everything = sorted(df.video.unique())
        cal = calibration_split(df, everything)[0] if a.calibrate else []
        if a.reuse:
            rd = earlier_round(out_dir / "all", bool(cal), "calibration.json")
            ckpt = reused(rd, "all", a.reuse if cal else "last")
        else:
            if cal:  # run_all's way: train on the rest, best epoch and temperature on the calibration fold
                rd = round_dir(a.work_dir, out_dir / "all", df, cal, [v for v in everything if v not in set(cal)])
            else:
                rd = round_dir(a.work_dir, out_dir / "all", df, [], everything)
                folds = pd.read_csv(rd / "folds.csv")
                # the engine needs a validation fold: one REAL and one FAKE video of the reserve fold
                # (only logged; the last checkpoint is used)
                held = [df[(df.fold == RESERVE_FOLD) & (df.label == k)].video.iloc[0] for k in (0, 1)]
                folds.loc[folds.video.isin(held), "fold"] = 0
                folds.to_csv(rd / "folds.csv", index=False)
            result = train(with_teacher(dict(cfg, name="all"), a.teacher_run, "all"), rd, fold=0, seed=a.seed,
                           weights_dir=rd / "weights", epochs=a.epochs, progress=False)
            ckpt = result.best if cal else result.last
        calibration = None
        if cal:
            from inference.calibration import save_calibration

            cal_scores = video_scores(ckpt, rd, a.strategy, a.seed)
            calibration = rd / f"calibration{tag}.json"
            save_calibration(calibration, fit_balanced_temperature(cal_scores, a.min_temperature),
                             {"videos": len(cal_scores), "fit": "balanced_log_loss",
                              "min_temperature": a.min_temperature})
        dev, scores = dev_scores(a.dev_dir, [ckpt], a.strategy, calibration=calibration)
        scores.to_csv(rd / f"dev_scores{tag}.csv", index=False)
        out["dev"], out["dev_auc"] = dev, dev["auc"]
        if scores.label.nunique() == 2:
            out["dev_auc_ci95"] = ci95(auc_replicates(scores.label, [scores.pred])[0])
        if calibration is not None:
            out["dev"]["temperature"] = _round(json.loads(calibration.read_text())["temperature"])
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
