#!/usr/bin/env python
"""Step 2: 5-point MTCNN landmarks of each original crop -> WORK_DIR/landmarks/{id}/{frame}_{face}.npy."""
import argparse
import sys

from preprocessing.landmarks import generate_landmarks
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    sys.exit(cli_main(generate_landmarks, add_common_args(argparse.ArgumentParser(description=__doc__))))
