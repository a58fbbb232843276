#!/usr/bin/env python
"""Evaluate a submission against the truth of a DFDC-shaped DATA_DIR, and write a small report.

Two kinds of submission, told apart by their header:
  * detection, `filename,label` (label = probability of FAKE, in [0, 1]), scored against
    the metadata.json labels: log loss, balanced log loss, ROC AUC, average precision,
    accuracy, equal error rate;
  * realism, `filename,mos` (the predicted mean opinion score, any finite number, as
    `6_predict.py` writes with a MOS checkpoint), scored against the metadata.json "mos"
    ratings (tools/import_mos_labels.py adds them): PLCC, SRCC, RMSE, MAE.

    python tools/evaluate.py --submission OUT.csv --data-dir DATA_DIR [--out-dir REPORT_DIR]
                             [--worst 12] [--no-crops] [--explanations EXPLAIN_DIR]

Writes REPORT_DIR (default: `<submission stem>_report/` next to the submission):
metrics.json (the metrics and the task, "detection" or "mos"), the plots (detection:
roc.png and calibration.png; realism: scatter.png, predicted against true MOS) and
report.html (self-contained: images are embedded as base64, so the page can be mailed or
moved alone). The report lists the worst videos (detection: largest log loss; realism:
largest absolute error) with a face crop of their middle frame. With --explanations, the
folder `6_predict.py --explain` wrote, every worst video links to its explanation page
(a relative link: keep the two folders side by side when moving them).

Which videos count: a submission row is matched to a labelled video by its path
relative to DATA_DIR (`part_0/abcdefghij.mp4`) or, failing that, by its file name when
that name is unique in DATA_DIR. Rows that match no labelled video ("unknown") and
labelled videos that have no row ("missing") are listed in the report and left out of
every metric: the metrics describe the predictions that were made, and the two lists
say how complete the submission is. For realism, a row whose video has no "mos" in its
metadata.json ("unrated") is listed and left out too, and "missing" counts the rated
videos only.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Run as `python tools/evaluate.py` the script's own folder is first on sys.path, not the
# repo root; the repo root is needed to import the `preprocessing` package.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from preprocessing.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text, encode_png  # noqa: E402
from preprocessing.dataset import Dataset, load_dataset  # noqa: E402

SUBMISSION_COLUMNS = ("filename", "label")
MOS_COLUMNS = ("filename", "mos")  # a realism submission (6_predict.py with a MOS checkpoint)
TASKS = ("detection", "mos")
FAKE_THRESHOLD = 0.5        # accuracy counts p >= 0.5 as a FAKE call
CALIBRATION_BINS = 10
CROP_MARGIN = 1 / 3         # as step 1 crops (selim): a third of the box side on every side
THUMBNAIL_LONG_SIDE = 160   # px; keeps report.html small with a dozen embedded images
# sklearn's log_loss clips predictions to [eps, 1 - eps] of their float dtype; the
# per-video losses that rank the worst videos use the same clip, so they add up to it.
LOG_LOSS_EPS = np.finfo(np.float64).eps


class EvaluationError(ValueError):
    """A submission or DATA_DIR that cannot be evaluated; the message says why, for the user."""


# --------------------------------------------------------------------------- inputs
def submission_task(sub: pd.DataFrame) -> str:
    """"mos" for a realism submission (a `mos` column and no `label` one), else "detection"."""
    return "mos" if "mos" in sub.columns and "label" not in sub.columns else "detection"


def matched_task(matched: pd.DataFrame) -> str:
    """The task of match_labels' output: "mos" when it carries the true MOS."""
    return "mos" if "mos" in matched.columns else "detection"


def load_submission(path: str | Path, tasks: tuple[str, ...] = ("detection",)) -> pd.DataFrame:
    """Read and validate a submission CSV.

    A detection submission (`filename,label`) gives columns filename (str), label (float,
    in [0, 1]). With "mos" in `tasks`, a realism submission (`filename,mos`: a header
    with `mos` and no `label`) is accepted too and gives filename (str), mos (float, any
    finite number); `submission_task` tells the two apart. The default takes detection
    submissions only, so callers that need probabilities are never handed MOS values.

    Every problem found is reported at once, naming the offending rows (1-based data
    rows, as a spreadsheet shows them below the header), so one run tells the user all
    that must be fixed. Extra columns are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"submission file not found: {path}")
    try:
        # Read everything as text: a name such as "001.mp4" must stay a name, and
        # non-numeric labels must be seen (and named) rather than silently become NaN.
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise EvaluationError(f"{path}: not a readable CSV ({e})") from e
    sub.columns = [str(c).strip() for c in sub.columns]
    found = ", ".join(map(repr, sub.columns)) or "none"
    if "mos" in sub.columns and "label" not in sub.columns and "filename" in sub.columns and "mos" not in tasks:
        raise EvaluationError(f"{path}: a realism submission ('filename,mos'); expected detection "
                              f"probabilities, the columns 'filename,label'")
    task = "mos" if "mos" in tasks and "mos" in sub.columns and "label" not in sub.columns else "detection"
    columns = MOS_COLUMNS if task == "mos" else SUBMISSION_COLUMNS
    absent = [c for c in columns if c not in sub.columns]
    if absent:
        alternative = " (or 'filename,mos' for realism scores)" if "mos" in tasks else ""
        raise EvaluationError(f"{path}: missing column(s) {', '.join(absent)}; expected the columns "
                              f"'{','.join(columns)}'{alternative}, found {found}")
    if sub.empty:
        raise EvaluationError(f"{path}: no rows (expected one row per video)")

    value = columns[1]
    names = sub["filename"].str.strip()
    text = sub[value].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    problems = []

    def rows_text(mask) -> str:
        bad = [f"row {i + 1} ({names.iloc[i]!r}: {sub[value].iloc[i]!r})" for i in np.flatnonzero(mask)]
        return ", ".join(bad[:20]) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else "")

    if task == "mos":
        # a MOS may be any finite number; "nan" and "inf" parse but are no rating
        nan_text = text.str.lower().isin({"nan", "+nan", "-nan"}).to_numpy()
        non_numeric = values.isna().to_numpy() & ~nan_text
        if non_numeric.any():
            problems.append(f"non-numeric mos in {rows_text(non_numeric)}")
        non_finite = ~non_numeric & ~np.isfinite(values.to_numpy(dtype=np.float64))
        if non_finite.any():
            problems.append(f"non-finite mos (NaN or infinite) in {rows_text(non_finite)}")
    else:
        non_numeric = values.isna().to_numpy()
        if non_numeric.any():
            problems.append(f"non-numeric label in {rows_text(non_numeric)}")
        out_of_range = (~non_numeric) & ~((values >= 0) & (values <= 1)).to_numpy()
        if out_of_range.any():
            problems.append(f"label outside [0, 1] in {rows_text(out_of_range)}")
    empty = (names == "").to_numpy()
    if empty.any():
        problems.append(f"empty filename in rows {', '.join(str(i + 1) for i in np.flatnonzero(empty))}")
    duplicated = names[names.duplicated(keep=False) & ~empty]
    if len(duplicated):
        problems.append(f"duplicated filename(s) {', '.join(sorted(set(duplicated)))}")
    if problems:
        raise EvaluationError(f"{path}: " + "; ".join(problems))
    return pd.DataFrame({"filename": names, value: values.astype(np.float64)})


def _relative_path(video) -> str:
    """The video's path relative to DATA_DIR, with its extension (the id has none)."""
    parent = Path(video.id).parent
    return (parent / video.path.name).as_posix() if str(parent) != "." else video.path.name


NO_MOS_MESSAGE = ("a realism (filename,mos) submission needs MOS ratings, but no video under DATA_DIR has a "
                  "\"mos\" in its metadata.json; add them with tools/import_mos_labels.py LABELS_CSV DATA_DIR")


def match_labels(sub: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, dict]:
    """Pair submission rows with labelled videos.

    Returns (matched, report). `matched` has one row per matched video: video_id,
    filename (as written in the submission), label (1 = FAKE), pred, and path (the video
    file, for the face crops). `report` counts and names the unknown rows and the missing
    videos. A bare file name that names videos in several folders cannot be resolved and
    raises EvaluationError naming them; so does a video named by two rows.

    A realism submission (see submission_task) is matched the same way, but its truth is
    the video's MOS: `matched` also has mos (the metadata rating) and pred is the
    predicted MOS. Rows whose video has no MOS are left out of `matched` and named in
    the report ("unrated"); "missing" lists the rated videos without a row. No rated
    video under DATA_DIR at all raises EvaluationError.
    """
    mos_task = submission_task(sub) == "mos"
    if mos_task and not any(v.mos is not None for v in dataset.videos):
        raise EvaluationError(NO_MOS_MESSAGE)
    by_path = {_relative_path(v): v for v in dataset.videos}
    by_name: dict[str, list] = {}
    for v in dataset.videos:
        by_name.setdefault(v.path.name, []).append(v)

    matched_rows, unknown, unrated, ambiguous = [], [], [], {}
    seen: dict[str, str] = {}
    duplicates = []
    for filename, pred in zip(sub["filename"], sub["mos" if mos_task else "label"]):
        key = filename.replace("\\", "/").removeprefix("./")
        video = by_path.get(key)
        if video is None and "/" not in key:
            candidates = by_name.get(key, [])
            if len(candidates) > 1:
                ambiguous[filename] = sorted(_relative_path(v) for v in candidates)
                continue
            video = candidates[0] if candidates else None
        if video is None:
            unknown.append(filename)
            continue
        if video.id in seen:
            duplicates.append(f"{video.id} (rows {seen[video.id]!r} and {filename!r})")
            continue
        seen[video.id] = filename
        if mos_task and video.mos is None:
            unrated.append(filename)
            continue
        matched_rows.append({"video_id": video.id, "filename": filename, "label": int(video.is_fake),
                             **({"mos": float(video.mos)} if mos_task else {}),
                             "pred": float(pred), "path": str(video.path)})
    if ambiguous:
        listed = "; ".join(f"{name!r} matches {', '.join(paths)}" for name, paths in sorted(ambiguous.items()))
        raise EvaluationError(f"ambiguous file name(s) in the submission: {listed}. "
                              "Write these rows as paths relative to DATA_DIR (folder/name.mp4).")
    if duplicates:
        raise EvaluationError(f"video(s) named by more than one submission row: {'; '.join(duplicates)}")

    columns = ["video_id", "filename", "label", *(["mos"] if mos_task else []), "pred", "path"]
    matched = pd.DataFrame(matched_rows, columns=columns)
    expected = [v for v in dataset.videos if v.mos is not None] if mos_task else dataset.videos
    missing = sorted(_relative_path(v) for v in expected if v.id not in seen)
    report = {
        "submission_rows": int(len(sub)),
        "labelled_videos": len(dataset.videos),
        **({"rated_videos": len(expected)} if mos_task else {}),
        "matched": int(len(matched)),
        "unknown_count": len(unknown),
        "unknown": sorted(unknown),
        **({"unrated_count": len(unrated), "unrated": sorted(unrated)} if mos_task else {}),
        "missing_count": len(missing),
        "missing": missing,
        "dataset_errors": list(dataset.errors),
    }
    return matched, report


# --------------------------------------------------------------------------- metrics
def equal_error_rate(y, p) -> float:
    """The error rate where the false positive rate equals the false negative rate.

    Along the ROC curve FPR - FNR = FPR + TPR - 1 never decreases, so it crosses zero
    once; the crossing is interpolated linearly between the two ROC points around it
    (a segment of the curve is a threshold's tied scores, split at random). Raises
    ValueError when y holds a single class (no ROC curve).
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ValueError("the equal error rate needs both classes")
    fpr, tpr, _ = roc_curve(y, p)
    fnr = 1.0 - tpr
    gap = fpr - fnr
    i = int(np.argmax(gap >= 0))  # the curve ends at gap = 1, so there is always one
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _balanced_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    from training.engine import balanced_log_loss

    return balanced_log_loss(y, p)


def compute_metrics(y, p) -> dict:
    """Video-level metrics: log loss (the DFDC score, sklearn), ROC AUC, average
    precision, accuracy at p >= 0.5, equal error rate, class counts.

    AUC, AP and EER are None when only one class is present: they rank FAKEs against
    REALs and mean nothing without both (None, not NaN, so metrics.json stays valid JSON).
    """
    from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("no videos to evaluate")
    both = len(np.unique(y)) == 2
    return {
        "videos": int(len(y)),
        "real": int((y == 0).sum()),
        "fake": int((y == 1).sum()),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        # the mean of the REAL and the FAKE videos' log losses: a constant 0.5 scores ln 2
        # whatever the class ratio (selim's validation score); one class present: its loss
        "balanced_log_loss": _balanced_log_loss(y, p),
        "auc": float(roc_auc_score(y, p)) if both else None,
        "average_precision": float(average_precision_score(y, p)) if both else None,
        "accuracy": float(accuracy_score(y, (p >= FAKE_THRESHOLD).astype(int))),
        "eer": equal_error_rate(y, p) if both else None,
    }


def per_video_log_loss(y, p) -> np.ndarray:
    """Each video's share of the log loss (clipped as sklearn clips): ranks the worst."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def compute_mos_metrics(true, pred) -> dict:
    """Realism metrics (training.engine.mos_metrics): videos, PLCC, SRCC, RMSE, MAE.

    A correlation is None (not NaN, so metrics.json stays valid JSON) where it is
    undefined: fewer than two videos, or a constant truth or prediction.
    """
    from training.engine import mos_metrics  # imports torch: only when a MOS is scored

    if len(true) == 0:
        raise ValueError("no videos to evaluate")
    metrics = mos_metrics(true, pred)
    return {key: (None if isinstance(value, float) and not np.isfinite(value) else value)
            for key, value in metrics.items()}


def evaluation_metrics(matched: pd.DataFrame) -> dict:
    """compute_metrics or compute_mos_metrics, as match_labels' output asks."""
    if matched_task(matched) == "mos":
        return compute_mos_metrics(matched["mos"], matched["pred"])
    return compute_metrics(matched["label"], matched["pred"])


def worst_videos(matched: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n worst videos, worst first (ties: by video id, stable).

    Detection: the largest log loss (column log_loss). Realism: the largest absolute
    error (column error = predicted - true MOS, and abs_error).
    """
    if matched_task(matched) == "mos":
        error = matched["pred"].to_numpy(np.float64) - matched["mos"].to_numpy(np.float64)
        ranked, key = matched.assign(error=error, abs_error=np.abs(error)), "abs_error"
    else:
        ranked, key = matched.assign(log_loss=per_video_log_loss(matched["label"], matched["pred"])), "log_loss"
    ranked = ranked.sort_values([key, "video_id"], ascending=[False, True], kind="stable")
    return ranked.head(max(n, 0)).reset_index(drop=True)


# --------------------------------------------------------------------------- plots
def _figure(figsize):
    """A matplotlib Figure bound to the Agg canvas, without pyplot: no global state, no
    display needed, whatever backend the caller's process has chosen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def roc_plot_png(y, p, auc: float | None) -> bytes:
    """ROC curve with its AUC in the legend and the chance diagonal."""
    from sklearn.metrics import roc_curve

    fig = _figure((4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    if auc is not None:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color="C0", lw=2, label=f"ROC (AUC = {auc:.4f})")
    else:
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (REAL called FAKE)",
           ylabel="true positive rate (FAKE caught)", title="ROC")
    ax.legend(loc="lower right")
    return _png_bytes(fig)


def calibration_plot_png(y, p, n_bins: int = CALIBRATION_BINS) -> bytes:
    """Reliability diagram (fraction of FAKEs per predicted-probability bin) above a
    histogram of the predictions per class: log loss punishes confident mistakes, and
    these two show where the confidence sits."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=np.float64)
    fig = _figure((4.5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    frac_fake, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    top.plot(mean_pred, frac_fake, marker="o", color="C0", label="submission")
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="fraction of FAKE videos",
            title=f"Reliability ({n_bins} bins)")
    top.legend(loc="upper left")
    bins = np.linspace(0, 1, n_bins + 1)
    bottom.hist([p[y == 0], p[y == 1]], bins=bins, color=["C2", "C3"], label=["REAL", "FAKE"])
    bottom.set(xlabel="predicted probability of FAKE", ylabel="videos")
    bottom.legend(loc="upper center")
    return _png_bytes(fig)


def mos_scatter_png(true, pred, plcc: float | None, srcc: float | None) -> bytes:
    """Predicted against true MOS, one dot per video, with the identity line (perfect
    predictions) over the range of both; PLCC and SRCC in the title."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    fig = _figure((4.5, 4.5))
    ax = fig.add_subplot()
    lo, hi = (float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))) if len(true) else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", label="identity (predicted = true)")
    ax.scatter(true, pred, s=18, alpha=0.7, color="C0", label=f"videos ({len(true)})")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true MOS", ylabel="predicted MOS",
           title=f"Predicted vs true MOS: PLCC {_fmt(plcc)}, SRCC {_fmt(srcc)}")
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    return _png_bytes(fig)


# --------------------------------------------------------------------------- face crops
def _downscale(image: np.ndarray, long_side: int = THUMBNAIL_LONG_SIDE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def middle_frame(path: str | Path) -> np.ndarray:
    """Decode the frame in the middle of the video (RGB). The container's frame count
    can be wrong (truncated files): then the middle of the frames actually decoded."""
    from preprocessing.video import VideoReadError, probe, read_frames

    middle = probe(path).frame_count // 2
    frames, reader = read_frames(path, [middle])
    if middle in frames:
        return frames[middle]
    middle = max(reader.num_frames - 1, 0) // 2
    frames, _ = read_frames(path, [middle])
    if middle not in frames:
        raise VideoReadError(f"cannot decode frame {middle}: {path}")
    return frames[middle]


def face_thumbnail(path: str | Path, detector) -> tuple[bytes | None, str]:
    """(PNG bytes or None, note) showing a video's most confident face in its middle frame.

    Never raises: a report is still useful with a note in place of a picture. No face:
    the whole frame, downscaled. Unreadable video or failed detection: no image.
    """
    from preprocessing.crops import crop_box
    from preprocessing.detection import detection_scale, min_face_size

    try:
        frame = middle_frame(path)
    except Exception as e:  # a report must survive any bad video
        return None, f"unreadable: {e}"
    h, w = frame.shape[:2]
    if detector is None:
        return encode_png(_downscale(frame)), "no face detector: whole frame"
    try:
        scale = detection_scale(w, h)
        detection = detector.detect([frame], scale, min_face_size=min_face_size(w, h, scale))[0]
    except Exception as e:
        return encode_png(_downscale(frame)), f"face detection failed ({e}): whole frame"
    if len(detection.probs) == 0:
        return encode_png(_downscale(frame)), "no face found: whole frame"
    best = int(np.argmax(detection.probs))
    x1, y1, x2, y2 = crop_box(detection.boxes[best], w, h, CROP_MARGIN)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return encode_png(_downscale(frame)), "degenerate face box: whole frame"
    return encode_png(_downscale(frame[y1:y2, x1:x2])), f"face p={detection.probs[best]:.3f}"


def _make_detector():
    from preprocessing.detection import FaceDetector

    return FaceDetector()


# --------------------------------------------------------------------------- report
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _name_list(title: str, names: list[str]) -> str:
    if not names:
        return f"<p>{html.escape(title)}: none.</p>"
    items = "".join(f"<li>{html.escape(n)}</li>" for n in names)
    return f"<details><summary>{html.escape(title)}: {len(names)}</summary><ul>{items}</ul></details>"


METRIC_ROWS = [("videos", "videos evaluated"), ("real", "REAL"), ("fake", "FAKE"),
               ("log_loss", "log loss"), ("balanced_log_loss", "balanced log loss (REAL/FAKE mean)"),
               ("auc", "ROC AUC"), ("average_precision", "average precision"),
               ("accuracy", f"accuracy (p >= {FAKE_THRESHOLD} is FAKE)"), ("eer", "equal error rate")]
MOS_METRIC_ROWS = [("videos", "videos evaluated (with a MOS)"), ("plcc", "PLCC (Pearson)"),
                   ("srcc", "SRCC (Spearman)"), ("rmse", "RMSE"), ("mae", "MAE")]

PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: #f3f3f3; }
.plots img { max-width: 48%; margin-right: 1%; }
.fake { color: #b00; } .real { color: #070; }
"""


def _worst_cells(row, task: str) -> str:
    """The task's own cells of a worst-video row (between the video and its picture)."""
    if task == "mos":
        return f"<td>{row.mos:.4f}</td><td>{row.pred:.4f}</td><td>{row.error:+.4f}</td>"
    label = "FAKE" if row.label else "REAL"
    return f'<td class="{label.lower()}">{label}</td><td>{row.pred:.4f}</td><td>{row.log_loss:.4f}</td>'


def render_html(metrics: dict, match_report: dict, worst: pd.DataFrame, thumbnails: dict[str, tuple],
                plots: list[tuple[str, bytes]], title: str, links: dict[str, str] | None = None,
                task: str = "detection") -> str:
    """The report page, self-contained (images inline as base64); `plots`: (alt text, PNG)
    in page order; `links`: video id -> the href of its explanation page ("" when the
    folder has none for it); `task`: "detection" or "mos" (metrics, matching text and
    the worst videos' columns follow it)."""
    esc = html.escape
    mos = task == "mos"
    metric_rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(_fmt(metrics[key]))}</td></tr>"
                          for key, label in (MOS_METRIC_ROWS if mos else METRIC_ROWS))
    worst_rows = []
    for rank, row in enumerate(worst.itertuples(index=False), start=1):
        png, note = thumbnails.get(row.video_id, (None, "crops skipped (--no-crops)"))
        picture = _img_tag(png, row.video_id) if png else ""
        if links is not None:
            href = links.get(row.video_id)
            picture += (f'<br><a href="{esc(href)}">explanation</a>' if href
                        else "<br><small>no explanation page</small>")
        worst_rows.append(
            f"<tr><td>{rank}</td><td>{esc(row.video_id)}<br><small>{esc(row.filename)}</small></td>"
            f"{_worst_cells(row, task)}<td>{picture}<br><small>{esc(note)}</small></td></tr>")
    errors = [f"{e.get('video') or '(folder)'}: {e.get('error')}" for e in match_report["dataset_errors"]]
    r = match_report
    if mos:
        matching = f"""<p>{r['matched']} of {r['submission_rows']} submission rows matched a video with a MOS
({r['rated_videos']} of the {r['labelled_videos']} labelled videos in DATA_DIR have one). Unknown rows,
rows whose video has no MOS (unrated) and missing videos are left out of every metric.</p>
{_name_list("Submission rows without a labelled video (unknown)", r["unknown"])}
{_name_list("Submission rows whose video has no MOS in its metadata.json (unrated)", r["unrated"])}
{_name_list("Videos with a MOS missing from the submission", r["missing"])}"""
        worst_title = f"The {len(worst)} worst-predicted videos (largest absolute error)"
        worst_header = ("<th>#</th><th>video</th><th>true MOS</th><th>predicted MOS</th>"
                        "<th>error (predicted - true)</th><th>middle frame</th>")
    else:
        matching = f"""<p>{r['matched']} of {r['submission_rows']} submission rows matched a labelled video
({r['labelled_videos']} labelled videos in DATA_DIR). Unknown rows and missing videos
are left out of every metric.</p>
{_name_list("Submission rows without a labelled video (unknown)", r["unknown"])}
{_name_list("Labelled videos missing from the submission", r["missing"])}"""
        worst_title = f"The {len(worst)} worst-scored videos (largest log loss)"
        worst_header = ("<th>#</th><th>video</th><th>label</th><th>prediction</th><th>log loss</th>"
                        "<th>middle frame</th>")
    images = "".join(_img_tag(png, alt) for alt, png in plots)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>{esc(title)}</h1>
<h2>Metrics</h2>
<table>{metric_rows}</table>
{matching}
{_name_list("DATA_DIR problems (videos without usable labels)", errors)}
<h2>Plots</h2>
<div class="plots">{images}</div>
<h2>{worst_title}</h2>
<table><tr>{worst_header}</tr>
{''.join(worst_rows)}</table>
</body></html>
"""


def _worst_record(row, task: str) -> dict:
    if task == "mos":
        return {"video_id": row.video_id, "filename": row.filename, "mos": float(row.mos),
                "pred": float(row.pred), "error": float(row.error)}
    return {"video_id": row.video_id, "filename": row.filename, "label": "FAKE" if row.label else "REAL",
            "pred": float(row.pred), "log_loss": float(row.log_loss)}


def write_report(out_dir: str | Path, matched: pd.DataFrame, metrics: dict, match_report: dict,
                 worst: int = 12, crops: bool = True, detector=None,
                 context: dict | None = None, explanations: str | Path | None = None) -> dict[str, Path]:
    """Write metrics.json, the plots and report.html into out_dir.

    The task follows `matched` (match_labels' output, see matched_task): detection
    writes roc.png and calibration.png, realism (MOS) scatter.png; metrics.json holds
    the task, the metrics, the matching report and the worst videos.
    `detector` (a FaceDetector) is built on demand when crops are wanted and none is
    given; `context` (submission and DATA_DIR paths) is stored in metrics.json as is;
    `explanations`: the folder of 6_predict's --explain pages, linked from the worst videos.
    Returns the written paths by name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = matched_task(matched)
    p = matched["pred"].to_numpy()
    worst_df = worst_videos(matched, worst)

    thumbnails: dict[str, tuple] = {}
    if crops and len(worst_df):
        if detector is None:
            try:
                detector = _make_detector()
            except Exception as e:  # without MTCNN the report still shows whole frames
                print(f"[evaluate] face detector unavailable ({e}); showing whole frames", file=sys.stderr)
        for row in worst_df.itertuples(index=False):
            thumbnails[row.video_id] = face_thumbnail(row.path, detector)

    links = None
    if explanations is not None:
        import os

        from inference.explain import page_name

        links = {}
        for row in worst_df.itertuples(index=False):
            page = Path(explanations) / page_name(row.filename)
            links[row.video_id] = os.path.relpath(page, out_dir) if page.is_file() else ""
    if task == "mos":
        pngs = {"scatter.png": ("predicted vs true MOS",
                                mos_scatter_png(matched["mos"].to_numpy(), p, metrics["plcc"], metrics["srcc"]))}
    else:
        y = matched["label"].to_numpy()
        pngs = {"roc.png": ("ROC curve", roc_plot_png(y, p, metrics["auc"])),
                "calibration.png": ("calibration", calibration_plot_png(y, p))}
    paths = {name: out_dir / name for name in ("metrics.json", *pngs, "report.html")}
    for name, (_, png) in pngs.items():
        atomic_write_bytes(paths[name], png)
    worst_records = [{**_worst_record(r, task),
                      **({"explanation": links[r.video_id] or None} if links is not None else {})}
                     for r in worst_df.itertuples(index=False)]
    atomic_write_json(paths["metrics.json"], {**(context or {}), "task": task, "metrics": metrics,
                                              "matching": match_report, "worst": worst_records})
    title = f"Evaluation of {Path(context['submission']).name}" if context and "submission" in context \
        else "Evaluation"
    atomic_write_text(paths["report.html"], render_html(metrics, match_report, worst_df, thumbnails,
                                                        list(pngs.values()), title, links, task))
    return paths


# --------------------------------------------------------------------------- CLI
def summary_line(metrics: dict, match_report: dict, report_path: Path) -> str:
    if "plcc" in metrics:   # realism
        parts = [f"{metrics['videos']} videos with a MOS:"]
        parts += [f"{key} {_fmt(metrics[key])}" for key in ("plcc", "srcc", "rmse", "mae")]
        extra = (f" | {match_report['unknown_count']} unknown, {match_report['unrated_count']} unrated, "
                 f"{match_report['missing_count']} missing")
        return f"[evaluate] {' '.join(parts)}{extra} -> {report_path}"
    parts = [f"{metrics['videos']} videos ({metrics['real']} REAL, {metrics['fake']} FAKE):"]
    parts += [f"{key} {_fmt(metrics[key])}"
              for key in ("log_loss", "balanced_log_loss", "auc", "average_precision", "accuracy", "eer")]
    extra = f" | {match_report['unknown_count']} unknown, {match_report['missing_count']} missing"
    return f"[evaluate] {' '.join(parts)}{extra} -> {report_path}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submission", required=True, type=Path,
                   help="CSV with columns filename,label (detection: probability of FAKE) "
                        "or filename,mos (realism: predicted MOS)")
    p.add_argument("--data-dir", required=True, type=Path,
                   help='DFDC-shaped folder with metadata.json labels (and "mos" ratings, for a MOS submission)')
    p.add_argument("--out-dir", type=Path, default=None,
                   help="report folder (default: <submission stem>_report/ next to the submission)")
    p.add_argument("--worst", type=int, default=12,
                   help="show the N worst videos: largest log loss, or largest absolute MOS error "
                        "(default %(default)s)")
    p.add_argument("--no-crops", action="store_true", help="skip decoding videos for face crops (fast)")
    p.add_argument("--explanations", type=Path, default=None, metavar="EXPLAIN_DIR",
                   help="the folder of `6_predict.py --explain` pages: link each worst video to its page")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.worst < 0:
            raise EvaluationError(f"--worst must be >= 0, got {args.worst}")
        sub = load_submission(args.submission, tasks=TASKS)
        if not args.data_dir.is_dir():
            raise EvaluationError(f"DATA_DIR not found (or not a folder): {args.data_dir}")
        dataset = load_dataset(args.data_dir)
        try:
            matched, match_report = match_labels(sub, dataset)
        except EvaluationError as e:
            if str(e) == NO_MOS_MESSAGE:
                raise EvaluationError(f"{e} (DATA_DIR: {args.data_dir})") from e
            raise
        if matched.empty:
            hint = f"; DATA_DIR has problems: {dataset.errors[0]['error']}" if dataset.errors else ""
            if submission_task(sub) == "mos":
                raise EvaluationError(
                    f"no submission row matches a video with a MOS in {args.data_dir} "
                    f"({len(sub)} rows, {match_report['unrated_count']} of them naming a video without a MOS; "
                    f"{match_report['rated_videos']} of {len(dataset.videos)} labelled videos rated; e.g. row "
                    f"{sub['filename'].iloc[0]!r}){hint}")
            raise EvaluationError(
                f"no submission row matches a labelled video in {args.data_dir} "
                f"({len(sub)} rows, {len(dataset.videos)} labelled videos; e.g. row "
                f"{sub['filename'].iloc[0]!r}){hint}")
    except EvaluationError as e:
        print(f"[evaluate] error: {e}", file=sys.stderr)
        return 1

    metrics = evaluation_metrics(matched)
    out_dir = args.out_dir or args.submission.parent / f"{args.submission.stem}_report"
    context = {"submission": str(args.submission.resolve()), "data_dir": str(args.data_dir.resolve())}
    paths = write_report(out_dir, matched, metrics, match_report, worst=args.worst,
                         crops=not args.no_crops, context=context, explanations=args.explanations)
    print(summary_line(metrics, match_report, paths["report.html"]))
    print(f"[evaluate] metrics: {paths['metrics.json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
