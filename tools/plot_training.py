#!/usr/bin/env python
"""Training curves of every run in a log folder, in one PNG.

    python tools/plot_training.py WORK_DIR/logs [--out curves.png]

5_train.py writes tensorboard events to WORK_DIR/logs/{name}_fold{fold}/. This reads
them without tensorboard (the TFRecord framing is read here, the records are
tensorboardX's protobufs) and draws, one line per run: the training loss and the
learning rate per step, and the validation balanced log loss, log loss and AUC per
epoch. Prints the PNG's path.
"""
from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PANELS = [("train/loss", "training loss (per step)"), ("train/lr", "learning rate"),
          ("val/balanced_log_loss", "validation balanced log loss"), ("val/log_loss", "validation log loss"),
          ("val/auc", "validation AUC")]


def read_records(path: Path):
    """The payloads of a TFRecord file: [len u64][crc u32][data][crc u32] each; a record cut
    short (a run still writing) ends the file."""
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return
        yield data[start:end]
        pos = end + 4


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file of one run, sorted by step."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(run_dir.glob("events.out.tfevents.*")):
        for rec in read_records(f):
            event = event_pb2.Event.FromString(rec)
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
    return {k: sorted(v) for k, v in out.items()}


def plot(runs: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for ax, (tag, title) in zip(axes, PANELS):
        for name, scalars in runs.items():
            points = scalars.get(tag)
            if points:
                x, y = zip(*points)
                ax.plot(x, y, marker="o" if tag.startswith("val/") else None, ms=3, lw=1.2, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch" if tag.startswith("val/") else "step")
        if tag == "train/lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logdir", type=Path, help="WORK_DIR/logs (one folder per run) or one run's folder")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default LOGDIR/training_curves.png)")
    a = p.parse_args(argv)
    if not a.logdir.is_dir():
        print(f"[plot_training] error: {a.logdir} is not a folder", file=sys.stderr)
        return 1
    dirs = sorted({f.parent for f in a.logdir.rglob("events.out.tfevents.*")})
    runs = {d.relative_to(a.logdir).as_posix() if d != a.logdir else d.name: read_scalars(d) for d in dirs}
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        print(f"[plot_training] error: no tensorboard events under {a.logdir}", file=sys.stderr)
        return 1
    out = plot(runs, a.out or a.logdir / "training_curves.png")
    print(f"[plot_training] {len(runs)} runs -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
