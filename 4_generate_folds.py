#!/usr/bin/env python
"""Step 4: WORK_DIR/folds.csv, one row per crop; everything showing one person shares a fold."""
import argparse
import sys

from preprocessing.folds import GROUP_BY, generate_folds
from preprocessing.identity import DEFAULT_THRESHOLD
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    p = add_common_args(argparse.ArgumentParser(description=__doc__))
    p.add_argument("--folds", type=int, default=5, help="number of folds (default %(default)s)")
    p.add_argument("--seed", type=int, default=777, help="seed of the group shuffle (default %(default)s)")
    p.add_argument("--group-by", choices=GROUP_BY, default="identity",
                   help="what shares a fold: originals showing the same person by dlib face descriptors "
                        "(cached in WORK_DIR/face_descriptors/), an original and its fakes, or the top-level "
                        "folder (a DFDC part, as selim did); a fake always goes with its original "
                        "(default %(default)s)")
    p.add_argument("--identity-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="largest distance between two faces' dlib descriptors that counts as one person, "
                        "for --group-by identity (default %(default)s, stricter than dlib's 0.6, which chains different people on video crops; lower splits more)")
    sys.exit(cli_main(generate_folds, p))
