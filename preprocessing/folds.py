"""Step 4: folds.csv, one row per crop; everything that shows one person shares a fold.

Splitting by group (not by crop or video) keeps a face seen in training out of
validation: a fake and its original share the background and the person, and DFDC
filmed each actor in many originals. Groups (`--group-by`):

    identity  originals whose dlib face descriptors match (preprocessing/identity.py),
              transitively, with all their fakes (default)
    original  an original and its fakes
    folder    the top-level folder of the video id (selim's split by DFDC part)

A fake always joins its original's group; fakes whose original is absent (orphans)
keep the group of that absent original. Folds are stratified: each holds about the
same share of the REAL videos and of the FAKE videos (videos, not crops, which vary
a hundredfold with a video's length).

Columns: FOLDS_COLUMNS, then `mos` (the video's realism rating on each of its rows,
empty when it has none) only when some video of DATA_DIR has a "mos" in its metadata;
without any, the file is exactly as before.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .artifacts import FOLDS_COLUMNS, CropManifest, WorkDir, atomic_write_text, parse_crop_name, write_errors
from .dataset import load_dataset
from .identity import DEFAULT_THRESHOLD, compute_descriptors, identity_groups
from .runner import StepError, StepOptions, StepResult

STEP = "4_generate_folds"
GROUP_BY = ("identity", "original", "folder")
MOS_COLUMN = "mos"  # optional, after FOLDS_COLUMNS (see the module doc)


def assign_folds(group_counts: Mapping[str, Sequence[int] | int], num_folds: int, seed: int) -> dict[str, int]:
    """Map each group to a fold so that every fold holds about the same share of each label.

    `group_counts` maps a group to its video counts per label, e.g. (real, fake); a plain
    int is one label. Deterministic given the seed: groups are shuffled by the seed, then
    the largest go first, each to the fold whose fill (its count over the label's total)
    after adding it is lowest in the labels the group has (ties: the emptier fold, then
    the lower index). Then single moves or swaps of groups between folds that lower the
    sum of squared fills are applied until none does; no fold is ever emptied.
    """
    if num_folds < 1:
        raise ValueError(f"--folds must be >= 1, got {num_folds}")
    groups = sorted(group_counts)
    if len(groups) < num_folds:
        raise StepError(f"only {len(groups)} groups of videos that must share a fold (see --group-by) for "
                        f"{num_folds} folds: every fold would not get one; use --folds {max(1, len(groups))} "
                        f"or more videos")
    counts = np.array([np.atleast_1d(group_counts[g]) for g in groups], dtype=float)  # (G, labels)
    totals = counts.sum(axis=0)
    scale = np.where(totals > 0, 1 / np.maximum(totals, 1), 0.0)  # a count as a share of its label
    rng = np.random.default_rng(seed)
    order = sorted(rng.permutation(len(groups)), key=lambda i: -counts[i].sum())  # stable: the shuffle breaks ties
    load = np.zeros((num_folds, counts.shape[1]))
    fold = np.zeros(len(groups), dtype=int)
    for i in order:
        has = (counts[i] > 0) & (totals > 0)
        fill_after = ((load + counts[i]) * scale)[:, has].max(axis=1) if has.any() else np.zeros(num_folds)
        fill_now = (load * scale).sum(axis=1)
        k = min(range(num_folds), key=lambda k: (fill_after[k], fill_now[k], k))
        fold[i] = k
        load[k] += counts[i]
    _improve(counts, fold, load, scale, order)
    return {g: int(fold[i]) for i, g in enumerate(groups)}


def _improve(counts: np.ndarray, fold: np.ndarray, load: np.ndarray, scale: np.ndarray, order: list[int]) -> None:
    """Local search after the greedy pass, in place: the best move of a group from fold a
    to fold b, or swap of a group of a with one of b, while it lowers sum((load*scale)^2).

    Moving counts e from a to b changes that sum by sum(scale^2 * 2e (load_b - load_a + e));
    a swap of c and d is a move of e = c - d. Groups with equal counts are interchangeable,
    so only the first (in the seeded order) of each distinct count vector is tried.
    """
    num_folds = len(load)
    rank = np.empty(len(counts), dtype=int)
    rank[order] = np.arange(len(order))
    weight = scale ** 2
    no_group = np.zeros((1, counts.shape[1]))
    for _ in range(10 * len(counts)):  # a bound only: each step strictly lowers the sum
        candidates = []
        for k in range(num_folds):
            members = np.flatnonzero(fold == k)
            members = members[np.argsort(rank[members])]
            _, first = np.unique(counts[members], axis=0, return_index=True)
            candidates.append(members[np.sort(first)])
        best, step = -1e-12, None
        for a in range(num_folds):
            for b in range(num_folds):
                if a == b:
                    continue
                give = counts[candidates[a]]
                take = counts[candidates[b]]
                if (fold == a).sum() > 1:  # a move (taking nothing back) must not empty fold a
                    take = np.vstack([take, no_group])
                e = give[:, None, :] - take[None, :, :]
                delta = (weight * 2 * e * (load[b] - load[a] + e)).sum(axis=-1)
                i, j = np.unravel_index(np.argmin(delta), delta.shape)
                if delta[i, j] < best:
                    best = delta[i, j]
                    step = (a, b, candidates[a][i], candidates[b][j] if j < len(candidates[b]) else None)
        if step is None:
            return
        a, b, g, h = step
        fold[g] = b
        load[a] -= counts[g]
        load[b] += counts[g]
        if h is not None:
            fold[h] = a
            load[b] -= counts[h]
            load[a] += counts[h]


def build_rows(opts: StepOptions) -> tuple[pd.DataFrame, list[dict]]:
    """One row per crop of every video with crops; `original` is the original's id for a
    paired fake, the video's own id for a REAL, and empty for an unpaired fake; `group`
    is the original's id (Video.group), before any grouping by identity or folder.
    A last column `mos` (float, NaN for a video without one) is there only when some
    video of the dataset has a MOS."""
    dataset = load_dataset(opts.data_dir)
    rated = any(v.mos is not None for v in dataset.videos)
    work = WorkDir(opts.work_dir)
    rows, errors = [], []
    for v in dataset.videos:
        manifest_path = work.crop_manifest(v.id)
        if not manifest_path.exists():
            errors.append({"video": v.id, "note": "no crops (see 1_extract_crops_errors.jsonl): not in folds"})
            continue
        m = CropManifest.load(manifest_path)
        original = v.id if not v.is_fake else (m.boxes_from if m.paired else "")
        # Fakes of one original share its group even when the original is absent (orphans).
        group = v.group
        for name in sorted(m.crops, key=parse_crop_name):
            frame, face = parse_crop_name(name)
            rows.append({"video": v.id, "file": f"crops/{v.id}/{name}", "label": int(v.is_fake),
                         "original": original, "frame": frame, "face": face, "group": group, MOS_COLUMN: v.mos})
    columns = FOLDS_COLUMNS[:-1] + ["group"] + ([MOS_COLUMN] if rated else [])
    df = pd.DataFrame(rows, columns=columns)
    if rated:
        df[MOS_COLUMN] = df[MOS_COLUMN].astype(float)  # None -> NaN, written as an empty field
    return df, errors


def regroup(df: pd.DataFrame, opts: StepOptions, group_by: str = "identity",
            identity_threshold: float = DEFAULT_THRESHOLD) -> tuple[pd.Series, list[dict]]:
    """The rows' groups under `group_by` (see the module doc), and notes for the originals
    that could not be grouped by identity (no face descriptor: they keep their own group)."""
    if group_by == "original":
        return df.group, []
    if group_by == "folder":
        return df.group.map(lambda g: g.split("/", 1)[0] if "/" in g else "."), []
    if group_by != "identity":
        raise ValueError(f"--group-by must be one of {GROUP_BY}, got {group_by!r}")
    if identity_threshold <= 0:
        raise ValueError(f"--identity-threshold must be > 0, got {identity_threshold}")
    originals = sorted(df.video[df.label == 0].unique())  # a REAL video's group is its own id
    found, failed = compute_descriptors(opts.work_dir, originals, force=opts.force,
                                        workers=opts.workers, progress=opts.progress)
    notes = [{"video": v, "note": f"no face descriptor ({why}): grouped with its own fakes only, not by identity"}
             for v, why in sorted(failed.items())]
    person = identity_groups(found, identity_threshold)
    return df.group.map(lambda g: person.get(g, g)), notes


def generate_folds(opts: StepOptions, folds: int = 5, seed: int = 777, group_by: str = "identity",
                   identity_threshold: float = DEFAULT_THRESHOLD) -> StepResult:
    """Write folds.csv: the rows of build_rows, grouped by `group_by`, each group in one
    of `folds` folds balanced by REAL and FAKE videos (assign_folds)."""
    t0 = time.time()
    result = StepResult(step=STEP, errors_file=opts.work.errors(STEP))
    if group_by not in GROUP_BY:
        raise ValueError(f"--group-by must be one of {GROUP_BY}, got {group_by!r}")
    if opts.part != 0:
        # folds.csv is one global file; part 0 writes it, other parts have nothing to do.
        result.seconds = time.time() - t0
        return result
    out = opts.work.folds
    df, errors = build_rows(opts)
    if df.empty:
        raise StepError(f"no crops under {opts.work.root / 'crops'}: run 1_extract_crops.py first")
    if opts.limit is not None:
        keep = sorted(df.group.unique())[:opts.limit]
        df = df[df.group.isin(keep)]
    result.total = df.video.nunique()

    groups, notes = regroup(df, opts, group_by, identity_threshold)
    df = df.assign(group=groups)
    errors += notes
    videos = df.drop_duplicates("video")
    per_group = videos.groupby(["group", "label"]).size().unstack(fill_value=0).reindex(columns=[0, 1], fill_value=0)
    fold_of = assign_folds({g: (int(r[0]), int(r[1])) for g, r in per_group.iterrows()}, folds, seed)
    df = df.assign(fold=df.group.map(fold_of))
    videos = df.drop_duplicates("video")
    empty = sorted(set(range(folds)) - set(videos.fold))
    if empty:  # cannot happen after assign_folds's check; kept as a loud guard
        raise StepError(f"folds {empty} are empty")
    # Deterministic and cheap (descriptors are cached), so always recomputed: a folds.csv made before more
    # videos were cropped is never left stale. An identical file is left untouched.
    text = df[FOLDS_COLUMNS + ([MOS_COLUMN] if MOS_COLUMN in df else [])].to_csv(index=False)
    if not opts.force and out.exists() and out.read_text() == text:
        result.skipped = result.total
    else:
        atomic_write_text(out, text)
        result.done = result.total
    result.noted = len(errors)
    by_fold = videos.groupby(["fold", "label"]).size()
    result.counters.update({"rows": len(df), "folds": folds, "groups": len(fold_of),
                            "largest_group": int(per_group.sum(axis=1).max()),
                            **{f"fold{k}_{name}": int(by_fold.get((k, label), 0))
                               for k in range(folds) for label, name in ((0, "real"), (1, "fake"))}})
    write_errors(result.errors_file, [{"step": STEP, **e} for e in errors],
                 set(df.video.unique()))
    result.seconds = time.time() - t0
    return result
