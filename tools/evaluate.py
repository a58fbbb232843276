#!/usr/bin/env python
"""Evaluate a submission (`filename,label` CSV, label = probability of FAKE) against the
labels of a DFDC-shaped DATA_DIR, and write a small report.

    python tools/evaluate.py --submission OUT.csv --data-dir DATA_DIR [--out-dir REPORT_DIR]
                             [--worst 12] [--no-crops] [--explanations EXPLAIN_DIR]

Writes REPORT_DIR (default: `<submission stem>_report/` next to the submission):
metrics.json, roc.png, calibration.png and report.html (self-contained: images are
embedded as base64, so the page can be mailed or moved alone). With --explanations, the
folder `6_predict.py --explain` wrote, every worst video links to its explanation page
(a relative link: keep the two folders side by side when moving them).

Which videos count: a submission row is matched to a labelled video by its path
relative to DATA_DIR (`part_0/abcdefghij.mp4`) or, failing that, by its file name when
that name is unique in DATA_DIR. Rows that match no labelled video ("unknown") and
labelled videos that have no row ("missing") are listed in the report and left out of
every metric: the metrics describe the predictions that were made, and the two lists
say how complete the submission is.
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
def load_submission(path: str | Path) -> pd.DataFrame:
    """Read and validate a submission CSV; returns columns filename (str), label (float).

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
    absent = [c for c in SUBMISSION_COLUMNS if c not in sub.columns]
    if absent:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(absent)}; expected the columns "
                              f"'filename,label', found {', '.join(map(repr, sub.columns)) or 'none'}")
    if sub.empty:
        raise EvaluationError(f"{path}: no rows (expected one row per video)")

    names = sub["filename"].str.strip()
    labels = pd.to_numeric(sub["label"].str.strip(), errors="coerce")
    problems = []

    def rows_text(mask) -> str:
        bad = [f"row {i + 1} ({names.iloc[i]!r}: {sub['label'].iloc[i]!r})" for i in np.flatnonzero(mask)]
        return ", ".join(bad[:20]) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else "")

    non_numeric = labels.isna().to_numpy()
    if non_numeric.any():
        problems.append(f"non-numeric label in {rows_text(non_numeric)}")
    out_of_range = (~non_numeric) & ~((labels >= 0) & (labels <= 1)).to_numpy()
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
    return pd.DataFrame({"filename": names, "label": labels.astype(np.float64)})


def _relative_path(video) -> str:
    """The video's path relative to DATA_DIR, with its extension (the id has none)."""
    parent = Path(video.id).parent
    return (parent / video.path.name).as_posix() if str(parent) != "." else video.path.name


def match_labels(sub: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, dict]:
    """Pair submission rows with labelled videos.

    Returns (matched, report). `matched` has one row per matched video: video_id,
    filename (as written in the submission), label (1 = FAKE), pred, and path (the video
    file, for the face crops). `report` counts and names the unknown rows and the missing
    videos. A bare file name that names videos in several folders cannot be resolved and
    raises EvaluationError naming them; so does a video named by two rows.
    """
    by_path = {_relative_path(v): v for v in dataset.videos}
    by_name: dict[str, list] = {}
    for v in dataset.videos:
        by_name.setdefault(v.path.name, []).append(v)

    matched_rows, unknown, ambiguous = [], [], {}
    seen: dict[str, str] = {}
    duplicates = []
    for filename, pred in zip(sub["filename"], sub["label"]):
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
        matched_rows.append({"video_id": video.id, "filename": filename,
                             "label": int(video.is_fake), "pred": float(pred), "path": str(video.path)})
    if ambiguous:
        listed = "; ".join(f"{name!r} matches {', '.join(paths)}" for name, paths in sorted(ambiguous.items()))
        raise EvaluationError(f"ambiguous file name(s) in the submission: {listed}. "
                              "Write these rows as paths relative to DATA_DIR (folder/name.mp4).")
    if duplicates:
        raise EvaluationError(f"video(s) named by more than one submission row: {'; '.join(duplicates)}")

    matched = pd.DataFrame(matched_rows, columns=["video_id", "filename", "label", "pred", "path"])
    missing = sorted(_relative_path(v) for v in dataset.videos if v.id not in seen)
    report = {
        "submission_rows": int(len(sub)),
        "labelled_videos": len(dataset.videos),
        "matched": int(len(matched)),
        "unknown_count": len(unknown),
        "unknown": sorted(unknown),
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


def worst_videos(matched: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n videos with the largest log loss, worst first (ties: by video id, stable)."""
    ranked = matched.assign(log_loss=per_video_log_loss(matched["label"], matched["pred"]))
    ranked = ranked.sort_values(["log_loss", "video_id"], ascending=[False, True], kind="stable")
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

PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: #f3f3f3; }
.plots img { max-width: 48%; margin-right: 1%; }
.fake { color: #b00; } .real { color: #070; }
"""


def render_html(metrics: dict, match_report: dict, worst: pd.DataFrame, thumbnails: dict[str, tuple],
                roc_png: bytes, calibration_png: bytes, title: str, links: dict[str, str] | None = None) -> str:
    """The report page, self-contained (images inline as base64); `links`: video id -> the
    href of its explanation page ("" when the folder has none for it)."""
    esc = html.escape
    metric_rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(_fmt(metrics[key]))}</td></tr>"
                          for key, label in METRIC_ROWS)
    worst_rows = []
    for rank, row in enumerate(worst.itertuples(index=False), start=1):
        label = "FAKE" if row.label else "REAL"
        png, note = thumbnails.get(row.video_id, (None, "crops skipped (--no-crops)"))
        picture = _img_tag(png, row.video_id) if png else ""
        if links is not None:
            href = links.get(row.video_id)
            picture += (f'<br><a href="{esc(href)}">explanation</a>' if href
                        else "<br><small>no explanation page</small>")
        worst_rows.append(
            f"<tr><td>{rank}</td><td>{esc(row.video_id)}<br><small>{esc(row.filename)}</small></td>"
            f'<td class="{label.lower()}">{label}</td><td>{row.pred:.4f}</td><td>{row.log_loss:.4f}</td>'
            f"<td>{picture}<br><small>{esc(note)}</small></td></tr>")
    errors = [f"{e.get('video') or '(folder)'}: {e.get('error')}" for e in match_report["dataset_errors"]]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>{esc(title)}</h1>
<h2>Metrics</h2>
<table>{metric_rows}</table>
<p>{match_report['matched']} of {match_report['submission_rows']} submission rows matched a labelled video
({match_report['labelled_videos']} labelled videos in DATA_DIR). Unknown rows and missing videos
are left out of every metric.</p>
{_name_list("Submission rows without a labelled video (unknown)", match_report["unknown"])}
{_name_list("Labelled videos missing from the submission", match_report["missing"])}
{_name_list("DATA_DIR problems (videos without usable labels)", errors)}
<h2>Plots</h2>
<div class="plots">{_img_tag(roc_png, "ROC curve")}{_img_tag(calibration_png, "calibration")}</div>
<h2>The {len(worst)} worst-scored videos (largest log loss)</h2>
<table><tr><th>#</th><th>video</th><th>label</th><th>prediction</th><th>log loss</th><th>middle frame</th></tr>
{''.join(worst_rows)}</table>
</body></html>
"""


def write_report(out_dir: str | Path, matched: pd.DataFrame, metrics: dict, match_report: dict,
                 worst: int = 12, crops: bool = True, detector=None,
                 context: dict | None = None, explanations: str | Path | None = None) -> dict[str, Path]:
    """Write metrics.json, roc.png, calibration.png and report.html into out_dir.

    `detector` (a FaceDetector) is built on demand when crops are wanted and none is
    given; `context` (submission and DATA_DIR paths) is stored in metrics.json as is;
    `explanations`: the folder of 6_predict's --explain pages, linked from the worst videos.
    Returns the written paths by name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y, p = matched["label"].to_numpy(), matched["pred"].to_numpy()
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
    roc_png = roc_plot_png(y, p, metrics["auc"])
    calibration_png = calibration_plot_png(y, p)
    paths = {name: out_dir / name for name in ("metrics.json", "roc.png", "calibration.png", "report.html")}
    atomic_write_bytes(paths["roc.png"], roc_png)
    atomic_write_bytes(paths["calibration.png"], calibration_png)
    worst_records = [{"video_id": r.video_id, "filename": r.filename, "label": "FAKE" if r.label else "REAL",
                      "pred": float(r.pred), "log_loss": float(r.log_loss),
                      **({"explanation": links[r.video_id] or None} if links is not None else {})}
                     for r in worst_df.itertuples(index=False)]
    atomic_write_json(paths["metrics.json"], {**(context or {}), "metrics": metrics,
                                              "matching": match_report, "worst": worst_records})
    title = f"Evaluation of {Path(context['submission']).name}" if context and "submission" in context \
        else "Evaluation"
    atomic_write_text(paths["report.html"], render_html(metrics, match_report, worst_df, thumbnails,
                                                        roc_png, calibration_png, title, links))
    return paths


# --------------------------------------------------------------------------- CLI
def summary_line(metrics: dict, match_report: dict, report_path: Path) -> str:
    parts = [f"{metrics['videos']} videos ({metrics['real']} REAL, {metrics['fake']} FAKE):"]
    parts += [f"{key} {_fmt(metrics[key])}"
              for key in ("log_loss", "balanced_log_loss", "auc", "average_precision", "accuracy", "eer")]
    extra = f" | {match_report['unknown_count']} unknown, {match_report['missing_count']} missing"
    return f"[evaluate] {' '.join(parts)}{extra} -> {report_path}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submission", required=True, type=Path, help="CSV with columns filename,label")
    p.add_argument("--data-dir", required=True, type=Path, help="DFDC-shaped folder with metadata.json labels")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="report folder (default: <submission stem>_report/ next to the submission)")
    p.add_argument("--worst", type=int, default=12, help="show the N worst-scored videos (default %(default)s)")
    p.add_argument("--no-crops", action="store_true", help="skip decoding videos for face crops (fast)")
    p.add_argument("--explanations", type=Path, default=None, metavar="EXPLAIN_DIR",
                   help="the folder of `6_predict.py --explain` pages: link each worst video to its page")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.worst < 0:
            raise EvaluationError(f"--worst must be >= 0, got {args.worst}")
        sub = load_submission(args.submission)
        if not args.data_dir.is_dir():
            raise EvaluationError(f"DATA_DIR not found (or not a folder): {args.data_dir}")
        dataset = load_dataset(args.data_dir)
        matched, match_report = match_labels(sub, dataset)
        if matched.empty:
            hint = f"; DATA_DIR has problems: {dataset.errors[0]['error']}" if dataset.errors else ""
            raise EvaluationError(
                f"no submission row matches a labelled video in {args.data_dir} "
                f"({len(sub)} rows, {len(dataset.videos)} labelled videos; e.g. row "
                f"{sub['filename'].iloc[0]!r}){hint}")
    except EvaluationError as e:
        print(f"[evaluate] error: {e}", file=sys.stderr)
        return 1

    metrics = compute_metrics(matched["label"], matched["pred"])
    out_dir = args.out_dir or args.submission.parent / f"{args.submission.stem}_report"
    context = {"submission": str(args.submission.resolve()), "data_dir": str(args.data_dir.resolve())}
    paths = write_report(out_dir, matched, metrics, match_report, worst=args.worst,
                         crops=not args.no_crops, context=context, explanations=args.explanations)
    print(summary_line(metrics, match_report, paths["report.html"]))
    print(f"[evaluate] metrics: {paths['metrics.json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
