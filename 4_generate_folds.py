#!/usr/bin/env python
"""Step 4: WORK_DIR/folds.csv, one row per crop; an original and its fakes share a fold."""
import argparse
import sys

from preprocessing.folds import generate_folds
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    p = add_common_args(argparse.ArgumentParser(description=__doc__))
    p.add_argument("--folds", type=int, default=5, help="number of folds (default %(default)s)")
    p.add_argument("--seed", type=int, default=777, help="seed of the group shuffle (default %(default)s)")
    sys.exit(cli_main(generate_folds, p))
