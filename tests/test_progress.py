"""Progress bars in a log file: whole lines, not carriage-return frames (#9)."""
import io

import pytest

from preprocessing.progress import LineWriter, progress_bar


def test_a_bar_in_a_log_writes_whole_lines_only():
    log = io.StringIO()  # not a terminal
    bar = progress_bar(total=500, desc="step", unit="video", file=log)
    for _ in range(500):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    # a fast loop: the opening line and the final one, not one frame per item
    assert 1 <= len(lines) <= 3 and "500/500" in lines[-1] and lines[-1].startswith("step")


def test_a_postfix_on_every_step_does_not_force_a_line():
    """The training loop sets loss and imgs/s on every step; in a log that must not print a
    line per step (it did: tqdm's set_postfix refreshes by default)."""
    log = io.StringIO()
    bar = progress_bar(total=200, desc="epoch 0", file=log)
    for step in range(200):
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", imgs_s=12.5)
        bar.set_description("epoch 0")
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 3 and "200/200" in lines[-1] and "loss=0.0050" in lines[-1]


def test_line_writer_drops_empty_redraws():
    out = io.StringIO()
    w = LineWriter(out)
    w.write("\rstep: 10%")
    w.write("\r")
    w.write("\n")
    assert out.getvalue() == "step: 10%\n"


def test_training_eta_reads_well():
    from training.engine import format_eta

    assert format_eta(0) == "ETA 0s" and format_eta(245) == "ETA 4m05s" and format_eta(3725) == "ETA 1h02m"


def test_plot_training_reads_every_runs_events_and_draws_them(tmp_path):
    from tensorboardX import SummaryWriter

    from tools.plot_training import main, read_scalars

    logs = tmp_path / "logs"
    for run, scale in (("lite0_cpu_fold0", 1.0), ("deit_distill_cpu_fold0", 2.0)):
        w = SummaryWriter(str(logs / run))
        for step in range(6):
            w.add_scalar("train/loss", scale / (step + 1), step)
            w.add_scalar("train/lr", 1e-3 * 0.5 ** step, step)
        for epoch in range(2):
            w.add_scalar("val/balanced_log_loss", 0.7 - 0.1 * epoch, epoch)
            w.add_scalar("val/auc", 0.6 + 0.2 * epoch, epoch)
        w.close()
    scalars = read_scalars(logs / "lite0_cpu_fold0")
    assert [s for s, _ in scalars["train/loss"]] == list(range(6))
    assert scalars["train/loss"][3][1] == pytest.approx(0.25)
    assert [v for _, v in scalars["val/auc"]] == pytest.approx([0.6, 0.8])
    out = tmp_path / "curves.png"
    assert main([str(logs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000
    assert main([str(tmp_path / "nothing_here")]) == 1
