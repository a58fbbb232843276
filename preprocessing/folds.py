"""Step 4: folds.csv, one row per crop; an original and all its fakes share a fold.

Splitting by group (not by crop or video) keeps a face seen in training out of
validation: a fake and its original share the background and the person.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .artifacts import FOLDS_COLUMNS, CropManifest, WorkDir, atomic_write_text, parse_crop_name, write_errors
from .dataset import load_dataset
from .runner import StepError, StepOptions, StepResult

STEP = "4_generate_folds"


def assign_folds(group_sizes: dict[str, int], num_folds: int, seed: int) -> dict[str, int]:
    """Map each group to a fold, balancing the number of rows per fold.

    Deterministic given the seed: groups are shuffled by the seed, then the largest
    go first, each to the currently smallest fold (ties: lowest fold index).
    """
    if num_folds < 1:
        raise ValueError(f"--folds must be >= 1, got {num_folds}")
    groups = sorted(group_sizes)
    if len(groups) < num_folds:
        raise StepError(f"only {len(groups)} groups (an original with its fakes) for {num_folds} folds: "
                        f"every fold would not get one; use --folds {max(1, len(groups))} or more videos")
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    order.sort(key=lambda g: -group_sizes[g])  # stable: the shuffle breaks ties
    load = [0] * num_folds
    out = {}
    for g in order:
        k = int(np.argmin(load))
        out[g] = k
        load[k] += group_sizes[g]
    return out


def build_rows(opts: StepOptions) -> tuple[pd.DataFrame, list[dict]]:
    """One row per crop of every video with crops; `original` is the original's id for a
    paired fake, the video's own id for a REAL, and empty for an unpaired fake."""
    dataset = load_dataset(opts.data_dir)
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
                         "original": original, "frame": frame, "face": face, "group": group})
    return pd.DataFrame(rows, columns=FOLDS_COLUMNS[:-1] + ["group"]), errors


def generate_folds(opts: StepOptions, folds: int = 5, seed: int = 777) -> StepResult:
    t0 = time.time()
    result = StepResult(step=STEP, errors_file=opts.work.errors(STEP))
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

    fold_of = assign_folds(df.groupby("group").size().to_dict(), folds, seed)
    df = df.assign(fold=df.group.map(fold_of)).drop(columns="group")
    counts = df.fold.value_counts()
    empty = [k for k in range(folds) if counts.get(k, 0) == 0]
    if empty:  # cannot happen after assign_folds's check; kept as a loud guard
        raise StepError(f"folds {empty} are empty")
    # Cheap and deterministic, so always recomputed: a folds.csv made before more
    # videos were cropped is never left stale. An identical file is left untouched.
    text = df[FOLDS_COLUMNS].to_csv(index=False)
    if not opts.force and out.exists() and out.read_text() == text:
        result.skipped = result.total
    else:
        atomic_write_text(out, text)
        result.done = result.total
    result.noted = len(errors)
    result.counters.update({"rows": len(df), "folds": folds,
                            **{f"fold{k}_rows": int(counts.get(k, 0)) for k in range(folds)}})
    write_errors(result.errors_file, [{"step": STEP, **e} for e in errors],
                 set(df.video.unique()))
    result.seconds = time.time() - t0
    return result
