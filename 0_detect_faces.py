#!/usr/bin/env python
"""Step 0: MTCNN face boxes for originals (and fakes whose original is missing),
on every --frame-step-th frame, downscaled for speed -> WORK_DIR/boxes/{id}.json."""
import argparse
import sys

from preprocessing.detection import DEFAULT_DETECT_LONG_SIDE
from preprocessing.faces import DEFAULT_FRAME_STEP, detect_faces
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    p = add_common_args(argparse.ArgumentParser(description=__doc__))
    p.add_argument("--frame-step", type=int, default=DEFAULT_FRAME_STEP,
                   help="detect on every N-th frame, the frames step 1 crops (default %(default)s)")
    p.add_argument("--detect-long-side", type=int, default=DEFAULT_DETECT_LONG_SIDE,
                   help="downscale frames whose long side exceeds this before detection (default %(default)s)")
    p.add_argument("--min-prob", type=float, default=0.9, help="keep faces with MTCNN probability >= this")
    sys.exit(cli_main(detect_faces, p))
