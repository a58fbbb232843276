"""Progress bars that stay readable in a log file.

On a terminal a bar redraws itself in place. Written to a file or a CI log, every
redraw is a carriage-return frame on one endless line (`run_all.sh > log` could not be
read), so when the stream is not a terminal the bar prints a plain line at most every
LOG_INTERVAL seconds, and once at the end.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines of a bar in a log


class LineWriter:
    """A file wrapper that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LogTqdm(tqdm):
    """A bar for a log: a postfix or description change (the training loop sets the loss on
    every step) waits for the next timed line instead of forcing one."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def progress_bar(*, file=None, **kwargs) -> tqdm:
    """tqdm on stderr (or `file`): in place on a terminal, plain lines every 30 s in a log."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        return tqdm(file=stream, dynamic_ncols=True, **kwargs)
    return LogTqdm(file=LineWriter(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, ncols=100,
                   dynamic_ncols=False, **kwargs)
