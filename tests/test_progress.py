"""Progress bars in a log file: whole lines, not carriage-return frames (#9)."""
import io

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
