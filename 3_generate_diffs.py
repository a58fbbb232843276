#!/usr/bin/env python
"""Step 3: SSIM difference masks of each fake crop against its original's crop
-> WORK_DIR/diffs/{fake_id}/{frame}_{face}_diff.png."""
import argparse
import sys

from preprocessing.diffs import generate_diffs
from preprocessing.runner import add_common_args, cli_main

if __name__ == "__main__":
    sys.exit(cli_main(generate_diffs, add_common_args(argparse.ArgumentParser(description=__doc__))))
