#!/usr/bin/env python
"""Step 1: face crops of every video -> WORK_DIR/crops/{id}/{frame}_{face}.png.
A FAKE is cropped with its ORIGINAL's boxes, so the two are pixel-aligned."""
import argparse
import sys

from preprocessing.crops import DEFAULT_MARGIN, extract_crops
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    p = add_common_args(argparse.ArgumentParser(description=__doc__))
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="added on every side, as a fraction of the box side (default 1/3, as selim)")
    p.add_argument("--clip-len", type=int, default=1,
                   help="also crop the next N-1 frames after each detected frame with its box, "
                        "for the sequence model (default 1: detected frames only)")
    sys.exit(cli_main(extract_crops, p))
